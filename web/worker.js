// The inference worker: owns the wasm engine so the page never waits on it.
// Messages in:  {type: 'load', url} | {type: 'load', files} | {type: 'generate', request} | {type: 'stop'}
// Messages out: {type: 'progress', done, total} | {type: 'loaded', ...} | {type: 'token', id, text}
//               | {type: 'done', result} | {type: 'error', message}
import init, { Session } from './pkg/tritium_web.js';

let session = null;
let stopRequested = false;
const ready = init();

const post = (message) => self.postMessage(message);
const describe = (e) => (e && e.message) || String(e);

async function load(message) {
  await ready;
  if (!self.navigator.gpu) {
    throw new Error('This browser has no WebGPU. Use a recent Chrome or Edge (or enable WebGPU in your browser\'s settings).');
  }
  if (session) {
    session.free();
    session = null;
  }
  const progress = (done, total) => post({ type: 'progress', done, total });
  session = message.url
    ? await Session.from_url(new URL(message.url, self.location.href).href, message.ctx ?? null, progress)
    : await Session.from_files(message.files, message.ctx ?? null, progress);
  post({ type: 'loaded', adapter: session.adapter(), contextLen: session.context_len(), hasTokenizer: session.has_tokenizer() });
}

async function generate(message) {
  if (!session) throw new Error('No model is loaded yet.');
  stopRequested = false;
  const result = await session.generate(JSON.stringify(message.request), (id, text) => {
    post({ type: 'token', id, text });
    return !stopRequested;
  });
  post({ type: 'done', result });
}

self.onmessage = async (event) => {
  const message = event.data;
  try {
    if (message.type === 'load') await load(message);
    else if (message.type === 'generate') await generate(message);
    else if (message.type === 'stop') stopRequested = true;
  } catch (e) {
    post({ type: 'error', during: message.type, message: describe(e) });
  }
};
