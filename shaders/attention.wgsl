// Causal grouped-query attention of one new query position over the KV cache,
// split over the context so that many workgroups share a long one (the split-K
// "flash decoding" scheme).
//
// For query head h (KV head g = h / (heads / kv_heads)) and positions t <= pos:
//   s[t] = q_h . k_cache[t, g] / sqrt(head_dim);   w = softmax(s);
//   out_h = sum_t w[t] * v_cache[t, g]
//
// `attention_decode`: the positions 0..=pos fall in chunks = pos / SPLIT + 1
// chunks of SPLIT positions, and head h has rows = min(chunks, p.splits)
// workgroups. Workgroup (h, j) takes chunks j, j + rows, ... (one, until the
// context outgrows p.splits chunks) and writes their scores' maximum m_j, the
// sum l_j of exp(s - m_j), and the unnormalized o_j = sum exp(s - m_j) v to
// the partials.
// The last of head h's workgroups to finish (a count per head, split_counts)
// then rescales the splits to the overall maximum M and writes
//   out_h = sum_j exp(m_j - M) o_j / sum_j exp(m_j - M) l_j,
// so that no second dispatch runs to combine them.
// Softmax in f32 with the maximum subtracted, as in the CPU reference.
//
// While decoding, `attention_decode` also does what rope.wgsl does for a prompt
// (one dispatch fewer per layer): it rotates q as it loads it, and the workgroup
// holding `pos` takes that position's k (rotated) and v straight from the qkv
// row, in f32 (with KV_HALF too); the first query head of each KV group also
// writes them into the cache, where later steps read them. No workgroup reads
// the cache at `pos`, so none waits for that write.
//
// Layout: partials [heads, splits, quads + 1] vec4: quads = head_dim / 4 vec4s of
// o_j, then (m_j, l_j, 0, 0). Needs head_dim % 4 == 0 and head_dim <= 256.
// The KV cache holds f32 values, or with KV_HALF f16 ones (`--kv-cache
// f16`: half the cache's memory and reads), eight to a vec4<u32> in
// pack2x16float pairs; kernels read and write it a quad (4 values) at a time
// through k_quad, v_quad and store_kv, and compute in f32 either way. KV_HALF
// needs head_dim % 8 == 0.
// split_counts [heads] start at zero and are left at zero: the last
// workgroup of a head resets its count.
// Dispatch: [heads, rows] workgroups of WG_PARTIAL threads (any more return
// at once, uncounted); p.splits = min(ceil(ctx / SPLIT), a cap the host
// chooses) lays out the partials. A workgroup gives each key POS_THREADS
// threads, each a quarter of the dot product, and each thread a few values:
// its memory latency is paid in a few rounds, not one per vec4.
//
// `attention_causal` serves prefill: a chunk of step.tokens query positions
// (step.pos, step.pos + 1, ...), q read from rows of q_stride vec4s (each
// token's q, k and v, already rotated by rope.wgsl, k and v already in the
// cache), out laid out [tokens, heads, head_dim].
// Workgroup (h, t) walks positions 0..=step.pos + t in CHUNK-position pieces,
// rescaling its running sums as the maximum grows (online softmax), so it needs
// no scratch. Dispatch: [heads, tokens] workgroups; tokens past the chunk return.
// Reductions come from reduce*.wgsl.

struct Params {
    heads: u32,
    kv_heads: u32,
    scale: f32,  // 1 / sqrt(HEAD_DIM)
    splits: u32, // rows of partials a head: min(ceil(ctx / SPLIT), the host's cap), ctx the cache's positions
    q_stride: u32, // vec4s from one token's q to the next's (q, k and v share a row)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

struct Step {
    pos: u32,    // position of this step's (first) token
    tokens: u32, // tokens in this step (attention_causal)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> q: array<vec4<f32>>;              // [tokens, q_stride]: q [heads, head_dim / 4], k, v
// [ctx, kv_heads, head_dim / 4] f32 bits; KV_HALF: [ctx, kv_heads, head_dim / 8] f16 pairs.
@group(0) @binding(3) var<storage, read_write> k_cache: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read_write> v_cache: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read_write> partials: array<vec4<f32>>; // [heads, splits, head_dim / 4 + 1]
@group(0) @binding(6) var<storage, read_write> out: array<vec4<f32>>;      // [tokens, heads, head_dim / 4]
@group(0) @binding(7) var<storage, read> rope_table: array<vec2<f32>>;     // [ctx, head_dim / 2] (cos, sin)
// attention_decode_fixed: the output as the o projection's fixed-point input
// (fixed_word.wgsl), heads * head_dim / 16 words.
@group(0) @binding(8) var<storage, read_write> fixed_planes: array<vec4<u32>>; // [DIGITS, words]
@group(0) @binding(9) var<storage, read_write> fixed_info: array<vec2<u32>>;   // [words]
@group(0) @binding(10) var<storage, read_write> split_counts: array<atomic<u32>>; // [heads] splits done

override KV_HALF: u32 = 0u; // 1: the KV cache holds f16 values
// The head size: a constant of the pipeline rather than a uniform, so that
// the driver compiles the loops over a head knowing their counts (decode
// about 0.8 µs a layer faster on an H200 than with it in `p`: BENCHMARKS.md,
// round 27).
override HEAD_DIM: u32;

const WG: u32 = 64u;
const CHUNK: u32 = 64u; // attention_causal: positions per piece, one per thread for the scores
const SPLIT: u32 = 32u; // decode: positions per chunk
const POS_THREADS: u32 = 4u; // decode: threads per position for the scores
const WG_PARTIAL: u32 = 128u; // SPLIT * POS_THREADS
// Most groups of threads that merge a head's splits (merge_splits): their
// running maxima and denominators take half of `dots` each.
const MERGE_GROUPS: u32 = WG_PARTIAL / 2u;
var<workgroup> weights: array<f32, 64>;
var<workgroup> slices: array<vec4<f32>, WG_PARTIAL>;
// Each thread's part of a score; in merge_splits, the groups' running maxima
// and denominators. (More workgroup memory a workgroup costs this kernel
// more than a merge gains from its own arrays: 32B 146.1 t/s against 149.0
// with a 2 KB larger one.)
var<workgroup> dots: array<f32, WG_PARTIAL>;
var<workgroup> last_split: u32; // 1 in the workgroup that finished its head's splits
var<workgroup> q_head: array<vec4<f32>, 64>; // this workgroup's query [head_dim / 4]
var<workgroup> k_new: array<vec4<f32>, 64>;  // attention_decode: k and v at pos
var<workgroup> v_new: array<vec4<f32>, 64>;

// Quad `i` (values 4i .. 4i + 3) of the k and v caches.
fn k_quad(i: u32) -> vec4<f32> {
    if (KV_HALF == 1u) {
        return half_quad(k_cache[i / 2u], i);
    }
    return bitcast<vec4<f32>>(k_cache[i]);
}

fn v_quad(i: u32) -> vec4<f32> {
    if (KV_HALF == 1u) {
        return half_quad(v_cache[i / 2u], i);
    }
    return bitcast<vec4<f32>>(v_cache[i]);
}

// Quad `i` of the eight f16 values `eight` holds: its first four for even i.
fn half_quad(eight: vec4<u32>, i: u32) -> vec4<f32> {
    let pairs = select(eight.xy, eight.zw, (i & 1u) == 1u);
    return vec4<f32>(unpack2x16float(pairs.x), unpack2x16float(pairs.y));
}

// Writes quad `i` of the k and v caches (with KV_HALF, rounded to f16: two
// of the four u32 of element i / 2, the other two being quad i ^ 1's).
fn store_kv(i: u32, k: vec4<f32>, v: vec4<f32>) {
    if (KV_HALF == 1u) {
        let j = 2u * (i & 1u);
        k_cache[i / 2u][j] = pack2x16float(k.xy);
        k_cache[i / 2u][j + 1u] = pack2x16float(k.zw);
        v_cache[i / 2u][j] = pack2x16float(v.xy);
        v_cache[i / 2u][j + 1u] = pack2x16float(v.zw);
        return;
    }
    k_cache[i] = bitcast<vec4<u32>>(k);
    v_cache[i] = bitcast<vec4<u32>>(v);
}

// q_head . k_cache[k_at ..] over vec4s d = start, start + stride, ... < quads,
// with four independent loads and sums per step: a loop of one dependent load
// per step spent its time waiting on memory.
fn qk_dot_strided(k_at: u32, quads: u32, start: u32, stride: u32) -> f32 {
    var sums = vec4<f32>(0.0);
    var d = start;
    for (; d + 3u * stride < quads; d = d + 4u * stride) {
        sums.x = sums.x + dot(q_head[d], k_quad(k_at + d));
        sums.y = sums.y + dot(q_head[d + stride], k_quad(k_at + d + stride));
        sums.z = sums.z + dot(q_head[d + 2u * stride], k_quad(k_at + d + 2u * stride));
        sums.w = sums.w + dot(q_head[d + 3u * stride], k_quad(k_at + d + 3u * stride));
    }
    for (; d < quads; d = d + stride) {
        sums.x = sums.x + dot(q_head[d], k_quad(k_at + d));
    }
    return sums.x + sums.y + sums.z + sums.w;
}

fn qk_dot(k_at: u32, quads: u32) -> f32 {
    return qk_dot_strided(k_at, quads, 0u, 1u);
}

// Element i of the head starting at scalar `at` of the token's qkv row.
fn qkv_at(at: u32, i: u32) -> f32 {
    let e = at + i;
    return q[e / 4u][e % 4u];
}

// RoPE (rope.wgsl) of the pair (i, i + half) of the head at scalar `at`.
fn rotated_pair(at: u32, i: u32, half: u32, cs: vec2<f32>) -> vec2<f32> {
    let a = qkv_at(at, i);
    let b = qkv_at(at, i + half);
    return vec2<f32>(a * cs.x - b * cs.y, b * cs.x + a * cs.y);
}

// sum over positions first + i (i = slice, slice + step, ..., first + i < last)
// of weights[i] * v_cache[v_at + i * stride], four positions per loop step.
fn weighted_values(first: u32, last: u32, slice: u32, step: u32, v_at: u32, stride: u32) -> vec4<f32> {
    var a = vec4<f32>(0.0);
    var b = vec4<f32>(0.0);
    var i = slice;
    for (; first + i + 3u * step < last; i = i + 4u * step) {
        a = a + weights[i] * v_quad(v_at + i * stride) + weights[i + step] * v_quad(v_at + (i + step) * stride);
        b = b + weights[i + 2u * step] * v_quad(v_at + (i + 2u * step) * stride)
            + weights[i + 3u * step] * v_quad(v_at + (i + 3u * step) * stride);
    }
    for (; first + i < last; i = i + step) {
        a = a + weights[i] * v_quad(v_at + i * stride);
    }
    return a + b;
}

// Workgroups per head at this step: one per SPLIT-position chunk holding
// positions 0..=pos, but at most p.splits; past that each takes several.
fn rows_used() -> u32 {
    return min(step.pos / SPLIT + 1u, p.splits);
}

// Row `row` of head `head`'s workgroups: chunks row, row + rows_used(), ...
// of SPLIT positions, merged as they come (online softmax); its (m_j, l_j,
// o_j) into the partials.
fn split_partial(head: u32, row: u32, lid: u32) {
    let pos = step.pos;
    let chunks = pos / SPLIT + 1u;
    let rows = rows_used();
    let holds_pos = (chunks - 1u) % rows == row; // takes the chunk holding pos
    let quads = HEAD_DIM / 4u;
    let kv_stride = p.kv_heads * quads;
    let group = p.heads / p.kv_heads;
    let kv_offset = (head / group) * quads;

    // RoPE on this head's q, and in the row holding pos on its k; v as is.
    let half = HEAD_DIM / 2u;
    let k_at = (p.heads + head / group) * HEAD_DIM; // scalars into the qkv row
    let v_at = k_at + p.kv_heads * HEAD_DIM;
    let slot = pos * kv_stride + kv_offset;
    for (var i = lid; i < half; i = i + WG_PARTIAL) {
        let cs = rope_table[pos * half + i];
        let qr = rotated_pair(head * HEAD_DIM, i, half, cs);
        q_head[i / 4u][i % 4u] = qr.x;
        q_head[(i + half) / 4u][(i + half) % 4u] = qr.y;
        if (holds_pos) {
            let kr = rotated_pair(k_at, i, half, cs);
            k_new[i / 4u][i % 4u] = kr.x;
            k_new[(i + half) / 4u][(i + half) % 4u] = kr.y;
            v_new[i / 4u][i % 4u] = qkv_at(v_at, i);
            v_new[(i + half) / 4u][(i + half) % 4u] = qkv_at(v_at, i + half);
        }
    }
    workgroupBarrier();
    if (holds_pos && head % group == 0u) {
        for (var d = lid; d < quads; d = d + WG_PARTIAL) {
            store_kv(slot + d, k_new[d], v_new[d]);
        }
    }

    // Thread (slice, column) of the weighted values sums positions slice,
    // slice + slice_count, ... of each chunk.
    let slice_count = WG_PARTIAL / quads;
    let slice = lid / quads;
    let column = lid % quads;
    var run_max = -3.0e38; // maximum score so far
    var den = 0.0; // sum of exp(s - run_max) so far
    var acc = vec4<f32>(0.0); // sum of exp(s - run_max) v so far, this thread's part
    for (var chunk = row; chunk < chunks; chunk = chunk + rows) {
        let first = chunk * SPLIT;
        let last = min(first + SPLIT, pos + 1u);
        // Score of position first + i: threads POS_THREADS i .. + POS_THREADS - 1
        // each add up every POS_THREADS-th vec4 of the dot product, so that
        // neighbouring threads read neighbouring vec4s of the key (pos's own k
        // from workgroup memory).
        let part = lid % POS_THREADS;
        let t = first + lid / POS_THREADS;
        var part_dot = 0.0;
        if (t < pos) {
            part_dot = qk_dot_strided(t * kv_stride + kv_offset, quads, part, POS_THREADS);
        } else if (t == pos) {
            for (var d = part; d < quads; d = d + POS_THREADS) {
                part_dot = part_dot + dot(q_head[d], k_new[d]);
            }
        }
        dots[lid] = part_dot;
        workgroupBarrier();
        var s = -3.0e38;
        let scored = lid < SPLIT && first + lid < last;
        if (scored) {
            var sum = 0.0;
            for (var k = lid * POS_THREADS; k < (lid + 1u) * POS_THREADS; k = k + 1u) {
                sum = sum + dots[k];
            }
            s = sum * p.scale;
        }
        // Only the first SPLIT threads hold scores (the others' s and e are the
        // reductions' identities), so the reductions cover those alone: fewer
        // barriers.
        let m = max(run_max, workgroup_max(lid, SPLIT, s));
        let rescale = exp(run_max - m); // the sums so far, to the new maximum
        var e = 0.0;
        if (scored) {
            e = exp(s - m);
        }
        if (lid < SPLIT) {
            weights[lid] = e;
        }
        den = den * rescale + workgroup_sum(lid, SPLIT, e);
        run_max = m;
        workgroupBarrier();

        // Positions before pos from the cache; pos's value from workgroup memory.
        acc = acc * rescale;
        if (slice < slice_count) {
            let cached = min(last, pos);
            acc = acc + weighted_values(first, cached, slice, slice_count, kv_stride * first + kv_offset + column, kv_stride);
            if (last == pos + 1u && slice == 0u) {
                acc = acc + weights[pos - first] * v_new[column];
            }
        }
        workgroupBarrier(); // the next chunk writes dots and weights
    }
    slices[lid] = acc;
    workgroupBarrier();
    let record = (head * p.splits + row) * (quads + 1u);
    if (lid < quads) {
        var sum = vec4<f32>(0.0);
        for (var k = 0u; k < slice_count; k = k + 1u) {
            sum = sum + slices[k * quads + lid];
        }
        partials[record + lid] = sum;
    }
    if (lid == 0u) {
        partials[record + quads] = vec4<f32>(run_max, den, 0.0, 0.0);
    }
}

// Whether this workgroup is the last of head `head`'s splits to have
// written its partial: each counts itself once its writes are done.
fn last_of_head(head: u32, lid: u32) -> bool {
    // Every thread's partial writes happen before the count (the barrier's
    // storage semantics are device-wide), so the last workgroup sees them.
    storageBarrier();
    if (lid == 0u) {
        last_split = u32(atomicAdd(&split_counts[head], 1u) + 1u == rows_used());
    }
    return workgroupUniformLoad(&last_split) == 1u;
}

// One column of a split's partial, and its (m_j, l_j).
struct SplitRecord {
    column: vec4<f32>,
    stats: vec4<f32>,
}

fn split_record(record: u32, quads: u32, column: u32) -> SplitRecord {
    return SplitRecord(partials[record + column], partials[record + quads]);
}

// Merges head `head`'s splits (every partial written) into `out`, and
// leaves its quads in `slices`; resets the head's count for the next step.
// One pass over the splits: thread (group, column) merges column `column` of
// splits group, group + groups, ... as an online softmax does (a running
// maximum, its sums rescaled as it grows), and the groups' results are merged
// at the end. (Finding the maximum and the denominator first, each with a
// workgroup reduction, took three passes.)
fn merge_splits(head: u32, lid: u32) {
    // The other workgroups' partials, after the count that says they are done.
    storageBarrier();
    let used = rows_used();
    let quads = HEAD_DIM / 4u;
    let base = head * p.splits * (quads + 1u);
    let groups = min(WG_PARTIAL / quads, MERGE_GROUPS);
    let group = lid / quads;
    let column = lid % quads;
    var run_max = -3.0e38;
    var den = 0.0; // sum of exp(m_j - run_max) l_j
    var acc = vec4<f32>(0.0); // sum of exp(m_j - run_max) o_j, this column
    if (group < groups) {
        // Four of the group's splits a step, all requested before the first
        // is used: one wait on memory for four.
        for (var j = group; j < used; j = j + 4u * groups) {
            var records: array<SplitRecord, 4>;
            for (var k = 0u; k < 4u; k = k + 1u) {
                records[k] = split_record(base + min(j + k * groups, used - 1u) * (quads + 1u), quads, column);
            }
            for (var k = 0u; k < 4u && j + k * groups < used; k = k + 1u) {
                let m = max(run_max, records[k].stats.x);
                let rescale = exp(run_max - m);
                let e = exp(records[k].stats.x - m);
                den = den * rescale + e * records[k].stats.y;
                acc = acc * rescale + e * records[k].column;
                run_max = m;
            }
        }
    }
    slices[lid] = acc;
    if (column == 0u && group < groups) {
        dots[group] = run_max;
        dots[MERGE_GROUPS + group] = den;
    }
    if (lid == 0u) {
        atomicStore(&split_counts[head], 0u);
    }
    workgroupBarrier();
    if (lid < quads) {
        var top = -3.0e38;
        for (var k = 0u; k < groups; k = k + 1u) {
            top = max(top, dots[k]);
        }
        var sum = vec4<f32>(0.0);
        var total = 0.0;
        for (var k = 0u; k < groups; k = k + 1u) {
            let f = exp(dots[k] - top);
            sum = sum + f * slices[k * quads + lid];
            total = total + f * dots[MERGE_GROUPS + k];
        }
        let merged = sum / total;
        out[head * quads + lid] = merged;
        slices[lid] = merged; // only this thread reads or writes slot lid now
    }
}

// Workgroup (head, row) of a decode step: its chunks into the partials, and
// if it is the head's last to finish, the merge. Whether it merged.
fn decode_head(head: u32, row: u32, lid: u32) -> bool {
    if (row >= rows_used()) {
        return false; // the whole workgroup: a row past those this step needs
    }
    split_partial(head, row, lid);
    if (!last_of_head(head, lid)) {
        return false;
    }
    merge_splits(head, lid);
    return true;
}

@compute @workgroup_size(WG_PARTIAL)
fn attention_decode(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    decode_head(wg.x, wg.y, lid);
}

// attention_decode that also writes the head's output as the o projection's
// fixed-point input, one 16-value word per thread (head_dim % 16 == 0): one
// conversion dispatch fewer per layer. Its own entry point, so that the plain
// one binds no fixed-point buffers.
@compute @workgroup_size(WG_PARTIAL)
fn attention_decode_fixed(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let head = wg.x;
    if (!decode_head(head, wg.y, lid)) {
        return;
    }
    workgroupBarrier();
    let quads = HEAD_DIM / 4u;
    if (lid < quads / 4u) {
        let word = fixed_word(array<vec4<f32>, 4>(
            slices[4u * lid],
            slices[4u * lid + 1u],
            slices[4u * lid + 2u],
            slices[4u * lid + 3u],
        ));
        let words = p.heads * quads / 4u;
        let w = head * quads / 4u + lid;
        for (var k = 0u; k < DIGITS; k = k + 1u) {
            fixed_planes[k * words + w] = word.planes[k];
        }
        fixed_info[w] = word.info;
    }
}

@compute @workgroup_size(64)
fn attention_causal(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let head = wg.x;
    let token = wg.y;
    if (token >= step.tokens) {
        return; // the whole workgroup: the chunk is shorter than the dispatch
    }
    let n = step.pos + token + 1u; // positions this query sees
    let quads = HEAD_DIM / 4u;
    let kv_stride = p.kv_heads * quads;
    let kv_offset = (head / (p.heads / p.kv_heads)) * quads;
    let q_offset = token * p.q_stride + head * quads;
    let slice_count = WG / quads;
    let slice = lid / quads;
    let column = lid % quads;
    for (var d = lid; d < quads; d = d + WG) {
        q_head[d] = q[q_offset + d];
    }
    workgroupBarrier();
    var run_max = -3.0e38; // maximum score so far
    var run_sum = 0.0;     // sum of exp(s - run_max) so far
    var acc = vec4<f32>(0.0); // this thread's share of sum exp(s - run_max) v
    for (var first = 0u; first < n; first = first + CHUNK) {
        let last = min(first + CHUNK, n);
        let t = first + lid;
        var s = -3.0e38;
        if (t < last) {
            s = qk_dot(t * kv_stride + kv_offset, quads) * p.scale;
        }
        // The reductions' barriers also keep this write of `weights` after
        // every thread's reads of the previous piece's.
        let m = max(run_max, workgroup_max(lid, WG, s));
        var e = 0.0;
        if (t < last) {
            e = exp(s - m);
        }
        let rescale = exp(run_max - m);
        run_sum = run_sum * rescale + workgroup_sum(lid, WG, e);
        run_max = m;
        weights[lid] = e;
        workgroupBarrier();
        acc = acc * rescale;
        if (slice < slice_count) {
            acc = acc + weighted_values(first, last, slice, slice_count, kv_stride * first + kv_offset + column, kv_stride);
        }
    }
    slices[lid] = acc;
    workgroupBarrier();
    if (lid < quads) {
        var sum = vec4<f32>(0.0);
        for (var k = 0u; k < slice_count; k = k + 1u) {
            sum = sum + slices[k * quads + lid];
        }
        out[(token * p.heads + head) * quads + lid] = sum / run_sum;
    }
}
