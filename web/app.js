// The demo page: model picking, chat, settings and deep links. All model work
// happens in worker.js; this file only draws and forwards.
//
// Deep link: ?model=<folder URL>&prompt=<text>[&chat=1] or &ids=1,2,3, plus
// &max_tokens=N&temperature=T (also top_p, top_k, seed). The page loads the
// model, runs at once, and puts the reply in #tritium-output (its text) with
// the generated ids, comma-separated, in its data-ids attribute.

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });

const state = {
  loaded: false, busy: false, turns: [], reply: null, started: 0, tokens: 0, contextUsed: 0, contextLen: 0, adapter: '',
};

// Errors show in a banner, and in #tritium-output's data-error for scripts.
function showError(message) {
  $('error').textContent = message && message[0].toUpperCase() + message.slice(1);
  $('error').hidden = !message;
  if (message) $('tritium-output').dataset.error = message;
}

function setBusy(busy) {
  state.busy = busy;
  $('send').hidden = busy;
  $('stop').hidden = !busy;
  $('send').disabled = busy || !state.loaded;
  $('message').disabled = !state.loaded;
}

// Text with ``` fences becomes prose and <pre> code blocks with a copy button.
function render(container, text) {
  container.replaceChildren();
  const parts = text.split(/^```[^\n]*\n?/m);
  parts.forEach((part, i) => {
    if (i % 2 === 0) {
      if (part) container.append(document.createTextNode(part));
      return;
    }
    const pre = document.createElement('pre');
    const code = document.createElement('code');
    code.textContent = part.replace(/\n$/, '');
    const copy = document.createElement('button');
    copy.textContent = 'Copy';
    copy.type = 'button';
    copy.onclick = () => navigator.clipboard?.writeText(code.textContent);
    pre.append(code, copy);
    container.append(pre);
  });
}

function addTurn(role, text) {
  const turn = document.createElement('div');
  turn.className = `turn ${role}`;
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = role === 'user' ? 'You' : 'Assistant';
  const body = document.createElement('div');
  render(body, text);
  turn.append(who, body);
  $('transcript').append(turn);
  $('transcript').scrollTop = $('transcript').scrollHeight;
  return body;
}

function settings() {
  const number = (id, name) => {
    const value = Number($(id).value);
    if (!Number.isFinite(value) || value < 0) throw new Error(`${name} must be a number ≥ 0`);
    return value;
  };
  return {
    temperature: number('temperature', 'Temperature'),
    top_p: number('top-p', 'Top-p'),
    top_k: Math.floor(number('top-k', 'Top-k')),
    max_tokens: Math.max(1, Math.floor(number('max-tokens', 'Max tokens'))),
    seed: Math.floor(number('seed', 'Seed')),
  };
}

// `chat`: the reply belongs to the conversation (not to a raw prompt or ids).
function run(request, label, chat) {
  state.reply = { ids: [], text: '', body: addTurn('assistant', '…'), chat, discarded: false };
  state.started = 0;
  state.tokens = 0;
  setBusy(true);
  $('status').textContent = label;
  worker.postMessage({ type: 'generate', request });
}

function send() {
  const text = $('message').value.trim();
  if (!text || state.busy || !state.loaded) return;
  let request;
  try {
    request = settings();
  } catch (e) {
    return showError(e.message);
  }
  showError('');
  $('message').value = '';
  state.turns.push({ role: 'user', content: text });
  addTurn('user', text);
  const system = $('system').value.trim();
  request.messages = system ? [{ role: 'system', content: system }, ...state.turns] : state.turns;
  run(request, 'Generating…', true);
}

function load(message, label) {
  showError('');
  state.loaded = false;
  setBusy(false);
  $('progress').hidden = false;
  $('load-progress').value = 0;
  $('progress-text').textContent = `Reading ${label}…`;
  $('model-info').textContent = '';
  worker.postMessage(message);
}

function status() {
  const seconds = (performance.now() - state.started) / 1000;
  const rate = state.tokens > 1 && seconds > 0 ? ((state.tokens - 1) / seconds).toFixed(1) : '–';
  return `${state.tokens} tokens, ${rate} tokens/s · context ${state.contextUsed} / ${state.contextLen} tokens · ${state.adapter}`;
}

worker.onmessage = (event) => {
  const m = event.data;
  if (m.type === 'progress') {
    $('load-progress').value = m.total ? m.done / m.total : 0;
    $('progress-text').textContent = `Uploading weights to the GPU: ${(m.done / 1e6).toFixed(1)} of ${(m.total / 1e6).toFixed(1)} MB`;
  } else if (m.type === 'loaded') {
    state.loaded = true;
    state.contextLen = m.contextLen;
    state.contextUsed = 0;
    state.adapter = m.adapter;
    $('progress').hidden = true;
    $('model-info').textContent = `Loaded on ${m.adapter}; context ${m.contextLen} tokens.` +
      (m.hasTokenizer ? '' : ' No tokenizer.json: only token-id prompts work.');
    $('status').textContent = 'Ready.';
    setBusy(false);
    $('message').focus();
    startDeepLinkRun();
  } else if (m.type === 'token') {
    if (!state.started) state.started = performance.now();
    state.tokens += 1;
    state.reply.ids.push(m.id);
    state.reply.text += m.text;
    render(state.reply.body, state.reply.text || '…');
    $('transcript').scrollTop = $('transcript').scrollHeight;
    $('status').textContent = status();
  } else if (m.type === 'done') {
    const r = m.result;
    state.contextUsed = r.context_used;
    render(state.reply.body, r.text || r.ids.join(','));
    if (state.reply.chat && !state.reply.discarded) state.turns.push({ role: 'assistant', content: r.text });
    const output = $('tritium-output');
    output.textContent = r.text;
    output.dataset.ids = r.ids.join(',');
    const how = { stopped: ' (stopped)', max_tokens: ' (max tokens)', end_of_text: '' }[r.reason];
    $('status').textContent = status() + how;
    setBusy(false);
  } else if (m.type === 'error') {
    $('progress').hidden = true;
    if (m.during === 'generate') {
      state.reply?.body.parentElement.remove();
      if (state.reply?.chat && !state.reply.discarded) state.turns.pop(); // the user turn it answered
    }
    showError(m.message);
    setBusy(false);
  }
};
worker.onerror = (e) => showError(`The worker failed: ${e.message}. Is pkg/ built (scripts/build-web.sh)?`);

// A deep link runs once the model is loaded.
let deepLinkPending = params.has('ids') || params.has('prompt');
function startDeepLinkRun() {
  if (!deepLinkPending) return;
  deepLinkPending = false;
  const request = {
    max_tokens: Number(params.get('max_tokens') ?? 64),
    temperature: Number(params.get('temperature') ?? 0),
    top_p: Number(params.get('top_p') ?? 1),
    top_k: Number(params.get('top_k') ?? 40),
    seed: Number(params.get('seed') ?? 0),
  };
  let shown;
  if (params.has('ids')) {
    request.ids = params.get('ids').split(',').map((s) => Number(s.trim()));
    shown = `ids ${request.ids.join(',')}`;
  } else if (params.get('chat') === '1') {
    request.messages = [{ role: 'user', content: params.get('prompt') }];
    state.turns = [...request.messages];
    shown = params.get('prompt');
  } else {
    request.prompt = params.get('prompt');
    shown = request.prompt;
  }
  addTurn('user', shown);
  run(request, 'Generating…', params.get('chat') === '1');
}

$('pick-folder').onchange = (e) => e.target.files.length && load({ type: 'load', files: [...e.target.files] }, 'the folder');
$('pick-files').onchange = (e) => e.target.files.length && load({ type: 'load', files: [...e.target.files] }, 'the files');
$('load-url').onclick = () => $('model-url').value && load({ type: 'load', url: $('model-url').value }, $('model-url').value);
$('composer').onsubmit = (e) => { e.preventDefault(); send(); };
$('message').onkeydown = (e) => { if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); send(); } };
$('stop').onclick = () => worker.postMessage({ type: 'stop' });
$('new-chat').onclick = () => {
  if (state.busy) {
    worker.postMessage({ type: 'stop' });
    state.reply.discarded = true; // its tokens belong to the conversation being cleared
  }
  state.turns = [];
  $('transcript').replaceChildren();
};

if (!navigator.gpu) {
  showError('This browser has no WebGPU, which Tritium needs. Use a recent Chrome or Edge, or enable WebGPU in your browser\'s settings.');
} else if (params.has('model')) {
  $('model-url').value = params.get('model');
  load({ type: 'load', url: params.get('model') }, params.get('model'));
}
