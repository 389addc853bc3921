// Sampling on the GPU with temperature, top-k, top-p and min-p: the next
// token drawn from the logits as sampling.rs's Sampler draws it for the same
// random number, so that sampled decode steps queue one after another like
// greedy ones and each reads back 4 bytes instead of the logits.
//
// Candidates are (key, id) pairs. The key is the logit's bits mapped so that
// their unsigned order is f32::total_cmp's order, the order the host ranks
// by; a candidate ranks above another with a larger key, or with an equal
// key and a lower id (the order a stable sort by logit gives).
//
// `top_candidates` ranks windows of WINDOW candidates: workgroup g reads
// window g of its input (the logits, the id being the index, or an earlier
// pass's lists), sorts it in workgroup memory (a bitonic sort) and writes its
// TOP best, best first, as list g of its output. The best TOP of all are
// among the best TOP of their windows, so each pass keeps a sixteenth of the
// candidates, and the engine runs passes until one window is left (151,936
// logits: 149 lists, then 10, then the last pass). Entries past the input's
// end are NONE, which rank last.
//
// The last pass (DRAW, one workgroup) draws from its best TOP with the step's
// settings instead of writing them, as Sampler::sample_with does, in the
// same order of f32 operations: weights exp((logit - best) / temperature)
// over the top k (a thread each), then on one thread their sum, the kept
// prefix (min-p, then top-p), and the first kept candidate at which the
// probabilities, summed best first, pass r times the kept mass. Only exp and
// the division may round differently from the host's, so a draw differs
// from the host's only where r falls within rounding of a boundary.
//
// The host samples this way only with a top-k of 1 to TOP, below the
// number of logits (Engine::samples_on_gpu); the draw clamps k to that range
// so that it never reads past the candidates.
//
// Layout: logits [n] f32; candidates [...] (key, id): a pass reads its input
// from p.in_at and writes its lists from p.out_at.
// Dispatch: ceil(n / WINDOW) workgroups of 256 threads (one with DRAW).

struct Params {
    n: u32,      // entries of the input
    in_at: u32,  // where the input starts in candidates (not FROM_LOGITS)
    out_at: u32, // where the output lists start in candidates (not DRAW)
    flags: u32,  // FROM_LOGITS | DRAW
}

const FROM_LOGITS: u32 = 1u; // the input is the logits
const DRAW: u32 = 2u;        // the last pass: draw the token

// Written by the host before each sampled step.
struct Settings {
    temperature: f32, // > 0
    top_k: u32,       // 1..=TOP
    top_p: f32,       // (0, 1]; 1 keeps all
    min_p: f32,       // [0, 1]; 0 keeps all
    random: f32,      // r in [0, 1)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<u32>;                 // [n] f32 bits
@group(0) @binding(2) var<storage, read_write> candidates: array<vec2<u32>>; // (key, id)
@group(0) @binding(3) var<storage, read_write> token: array<u32>;            // [1] the drawn token (DRAW)
@group(0) @binding(4) var<uniform> s: Settings;

const WG: u32 = 256u;
const WINDOW: u32 = 1024u;
const TOP: u32 = 64u;
const NONE: u32 = 0xffffffffu;

var<workgroup> window: array<vec2<u32>, WINDOW>;
var<workgroup> weights: array<f32, TOP>;

// The candidate key of a logit's bits: negative values (sign bit set) have
// their bits reversed and fall below the positive ones, as in total_cmp.
fn order_key(bits: u32) -> u32 {
    if ((bits & 0x80000000u) != 0u) {
        return ~bits;
    }
    return bits | 0x80000000u;
}

// The logit a key was made from.
fn logit_of(key: u32) -> f32 {
    if ((key & 0x80000000u) != 0u) {
        return bitcast<f32>(key & 0x7fffffffu);
    }
    return bitcast<f32>(~key);
}

// Whether candidate a ranks above candidate b.
fn ranks_above(a: vec2<u32>, b: vec2<u32>) -> bool {
    return a.x > b.x || (a.x == b.x && a.y < b.y);
}

@compute @workgroup_size(256)
fn top_candidates(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let first = wg.x * WINDOW;
    for (var i = lid; i < WINDOW; i = i + WG) {
        let at = first + i;
        var c = vec2<u32>(0u, NONE);
        if (at < p.n) {
            if ((p.flags & FROM_LOGITS) != 0u) {
                c = vec2<u32>(order_key(logits[at]), at);
            } else {
                c = candidates[p.in_at + at];
            }
        }
        window[i] = c;
    }
    workgroupBarrier();
    // Bitonic sort: blocks of `size` alternate best-first and best-last, so
    // that each pair of neighbouring blocks is a bitonic sequence for the
    // next size; the last block, the whole window, ends best first.
    for (var size = 2u; size <= WINDOW; size = size * 2u) {
        for (var stride = size / 2u; stride > 0u; stride = stride / 2u) {
            for (var t = lid; t < WINDOW / 2u; t = t + WG) {
                // Pair t: entries i and i + stride, i with bit `stride` clear.
                let i = 2u * t - (t & (stride - 1u));
                let a = window[i];
                let b = window[i + stride];
                let best_first = (i & size) == 0u;
                if (select(ranks_above(a, b), ranks_above(b, a), best_first)) {
                    window[i] = b;
                    window[i + stride] = a;
                }
            }
            workgroupBarrier();
        }
    }
    if ((p.flags & DRAW) != 0u) {
        draw(lid);
    } else if (lid < TOP) {
        candidates[p.out_at + wg.x * TOP + lid] = window[lid];
    }
}

// Writes the token drawn from the sorted window's best (DRAW).
fn draw(lid: u32) {
    let k = clamp(s.top_k, 1u, min(TOP, p.n));
    if (lid < k) {
        weights[lid] = exp((logit_of(window[lid].x) - logit_of(window[0].x)) / s.temperature);
    }
    workgroupBarrier();
    if (lid != 0u) {
        return;
    }
    var total = 0.0;
    for (var i = 0u; i < k; i = i + 1u) {
        total = total + weights[i];
    }
    // min-p (relative to the best candidate, whose probability is
    // 1 / total) and top-p (the shortest prefix whose mass reaches p) keep
    // the first `keep`.
    var keep = k;
    if (s.min_p != 0.0 || s.top_p < 1.0) {
        let floor = s.min_p * (1.0 / total);
        var mass = 0.0;
        keep = 0u;
        while (keep < k) {
            let q = weights[keep] / total;
            if (keep > 0u && q < floor) {
                break;
            }
            keep = keep + 1u;
            mass = mass + q;
            if (s.top_p < 1.0 && mass >= s.top_p) {
                break;
            }
        }
    }
    var kept = 0.0;
    for (var i = 0u; i < keep; i = i + 1u) {
        kept = kept + weights[i] / total;
    }
    var r = s.random * kept;
    for (var i = 0u; i < keep; i = i + 1u) {
        let q = weights[i] / total;
        if (r < q) {
            token[0] = window[i].y;
            return;
        }
        r = r - q;
    }
    token[0] = window[keep - 1u].y;
}
