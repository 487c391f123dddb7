#!/usr/bin/env node
// ONNX Runtime side of bench/compare: times or runs the encoders exported by onnx_export.py.
// Needs `npm install --ignore-scripts` in this folder (package.json pins onnxruntime-node).
//
//   node ort_bench.js bench --image image.onnx --text text.onnx --tokens ids.bin --resolution 224
//        [--threads 2] [--repeats 5] [--batch 16] [--text-batch 64]
//     prints one JSON line: image_ms_b1, image_per_s_b1, image_per_s_b16, image_cpu_ms_b16 (the
//     process's CPU milliseconds per image of the batch calls: ORT's pool threads spin while
//     they wait, so with several threads this counts their waits too), text_per_s, load_s_*,
//     threads, repeats, ort_version. Each part runs one warm-up call, then `repeats` timed calls;
//     rates use the median call. Images are random N(0, 1) pixels; texts are the rows of ids.bin
//     (int64, [n, 77], little-endian) in batches of --text-batch, cycling if there are too few.
//   node ort_bench.js run --model m.onnx --input x.bin --type float32|int64 --shape 4,3,224,224
//        --out y.bin [--threads 2] [--optimized m.opt.onnx]
//     runs one batch and writes the float32 output; --optimized also saves the graph after ORT's
//     optimisations (to check which fused kernels it chose).
//   node ort_bench.js serve --image image.onnx [--text text.onnx --tokens ids.bin] --resolution 224
//        [--threads 2] [--batch 16] [--text-batch 64]
//     compare.py's paired mode: loads the sessions, runs one warm-up batch of each, prints
//     {"ready": true}; then answers each stdin line `image` (one batch of --batch random images)
//     or `text` (the next --text-batch rows of ids.bin) with one line {"s": seconds}.
//
// Sessions: intraOpNumThreads = --threads, interOpNumThreads = 1, sequential execution,
// graphOptimizationLevel 'all', CPU execution provider.
'use strict';

const fs = require('fs');
const ort = require('onnxruntime-node');

function parseArgs(argv) {
  const out = { _: [] };
  for (let i = 0; i < argv.length; ++i) {
    if (argv[i].startsWith('--')) {
      out[argv[i].slice(2)] = argv[i + 1];
      ++i;
    } else {
      out._.push(argv[i]);
    }
  }
  return out;
}

function need(args, key) {
  if (args[key] === undefined) throw new Error(`missing --${key}`);
  return args[key];
}

async function createSession(path, threads, optimizedPath) {
  const options = {
    executionProviders: ['cpu'],
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  };
  if (optimizedPath) options.optimizedModelFilePath = optimizedPath;
  const t = process.hrtime.bigint();
  const session = await ort.InferenceSession.create(path, options);
  return { session, loadS: Number(process.hrtime.bigint() - t) / 1e9 };
}

function median(v) {
  const s = [...v].sort((a, b) => a - b);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

// Seconds taken by each of `repeats` calls of fn(i), after one warm-up call fn(0).
async function timeCalls(fn, repeats) {
  await fn(0);
  const times = [];
  times.cpu = [];  // the process's CPU seconds of each call (user + system)
  for (let i = 0; i < repeats; ++i) {
    const c = process.cpuUsage(), t = process.hrtime.bigint();
    await fn(i);
    times.push(Number(process.hrtime.bigint() - t) / 1e9);
    const d = process.cpuUsage(c);
    times.cpu.push((d.user + d.system) / 1e6);
  }
  return times;
}

function randomNormal(n, seed) {
  // xorshift32 + Box-Muller: reproducible pixels, no dependency.
  let s = seed >>> 0 || 1;
  const uniform = () => {
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    return (s + 0.5) / 4294967296;
  };
  const a = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(uniform()));
    const th = 2 * Math.PI * uniform();
    a[i] = r * Math.cos(th);
    if (i + 1 < n) a[i + 1] = r * Math.sin(th);
  }
  return a;
}

function readInt64Rows(path, width) {
  const buf = fs.readFileSync(path);
  const ids = new BigInt64Array(buf.buffer, buf.byteOffset, buf.length / 8);
  if (ids.length % width) throw new Error(`${path}: size is not a multiple of ${width} int64`);
  return { ids, rows: ids.length / width };
}

async function bench(args) {
  const threads = parseInt(args.threads || '2', 10);
  const repeats = parseInt(args.repeats || '5', 10);
  const batch = parseInt(args.batch || '16', 10);
  const textBatch = parseInt(args['text-batch'] || '64', 10);
  const out = { engine: 'onnxruntime', ort_version: ort.env.versions ? ort.env.versions.common : undefined,
                threads, repeats, batch, text_batch: textBatch };

  if (args.image) {
    const res = parseInt(need(args, 'resolution'), 10);
    const { session, loadS } = await createSession(args.image, threads);
    out.load_s_image = loadS;
    const inputName = session.inputNames[0];
    const per = 3 * res * res;
    const pixels = randomNormal(per * batch, 1234);
    const b1 = new ort.Tensor('float32', pixels.subarray(0, per), [1, 3, res, res]);
    const bN = new ort.Tensor('float32', pixels, [batch, 3, res, res]);
    const t1 = median(await timeCalls(() => session.run({ [inputName]: b1 }), repeats));
    out.image_ms_b1 = 1000 * t1;
    out.image_per_s_b1 = 1 / t1;
    const callsN = await timeCalls(() => session.run({ [inputName]: bN }), repeats);
    const tN = median(callsN);
    out[`image_per_s_b${batch}`] = batch / tN;
    out[`image_cpu_ms_b${batch}`] = 1000 * median(callsN.cpu) / batch;
    await session.release();
  }

  if (args.text) {
    const ctx = parseInt(args.context || '77', 10);
    const { ids, rows } = readInt64Rows(need(args, 'tokens'), ctx);
    const nb = Math.max(1, Math.floor(rows / textBatch));
    if (rows < textBatch) throw new Error(`--tokens holds ${rows} rows, fewer than --text-batch ${textBatch}`);
    const { session, loadS } = await createSession(args.text, threads);
    out.load_s_text = loadS;
    const inputName = session.inputNames[0];
    const tensors = [];
    for (let b = 0; b < nb; ++b)
      tensors.push(new ort.Tensor('int64', ids.subarray(b * textBatch * ctx, (b + 1) * textBatch * ctx), [textBatch, ctx]));
    const t = median(await timeCalls((i) => session.run({ [inputName]: tensors[i % nb] }), repeats));
    out.text_per_s = textBatch / t;
    out.text_rows = rows;
    await session.release();
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}

async function run(args) {
  const threads = parseInt(args.threads || '2', 10);
  const shape = need(args, 'shape').split(',').map((x) => parseInt(x, 10));
  const type = args.type || 'float32';
  const buf = fs.readFileSync(need(args, 'input'));
  const ab = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length);
  const data = type === 'int64' ? new BigInt64Array(ab) : new Float32Array(ab);
  const { session } = await createSession(need(args, 'model'), threads, args.optimized);
  const result = await session.run({ [session.inputNames[0]]: new ort.Tensor(type, data, shape) });
  const y = result[session.outputNames[0]];
  fs.writeFileSync(need(args, 'out'), Buffer.from(y.data.buffer, y.data.byteOffset, y.data.byteLength));
  process.stdout.write(JSON.stringify({ dims: y.dims }) + '\n');
  await session.release();
}

async function serve(args) {
  const threads = parseInt(args.threads || '2', 10);
  const batch = parseInt(args.batch || '16', 10);
  const textBatch = parseInt(args['text-batch'] || '64', 10);
  const res = parseInt(need(args, 'resolution'), 10);
  const image = await createSession(need(args, 'image'), threads);
  const per = 3 * res * res;
  const pixels = new ort.Tensor('float32', randomNormal(per * batch, 1234), [batch, 3, res, res]);
  const imageFeed = { [image.session.inputNames[0]]: pixels };
  await image.session.run(imageFeed);  // warm-up
  let text = null;
  const textFeeds = [];
  if (args.text) {
    const ctx = parseInt(args.context || '77', 10);
    const { ids, rows } = readInt64Rows(need(args, 'tokens'), ctx);
    if (rows < textBatch) throw new Error(`--tokens holds ${rows} rows, fewer than --text-batch ${textBatch}`);
    text = await createSession(args.text, threads);
    const name = text.session.inputNames[0];
    for (let b = 0; b + textBatch <= rows; b += textBatch)
      textFeeds.push({ [name]: new ort.Tensor('int64', ids.subarray(b * ctx, (b + textBatch) * ctx), [textBatch, ctx]) });
    await text.session.run(textFeeds[0]);  // warm-up
  }
  process.stdout.write(JSON.stringify({ ready: true, load_s: image.loadS }) + '\n');
  let nextText = 0;
  const rl = require('readline').createInterface({ input: process.stdin, terminal: false });
  for await (const line of rl) {
    let feed = null;
    let session = null;
    if (line === 'image') {
      session = image.session;
      feed = imageFeed;
    } else if (line === 'text' && text) {
      session = text.session;
      feed = textFeeds[nextText];
      nextText = (nextText + 1) % textFeeds.length;
    } else {
      process.stdout.write(JSON.stringify({ error: `unknown request '${line}'` }) + '\n');
      continue;
    }
    const t = process.hrtime.bigint();
    await session.run(feed);
    process.stdout.write(JSON.stringify({ s: Number(process.hrtime.bigint() - t) / 1e9 }) + '\n');
  }
  await image.session.release();
  if (text) await text.session.release();
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const verb = args._[0];
  if (verb === 'bench') return bench(args);
  if (verb === 'run') return run(args);
  if (verb === 'serve') return serve(args);
  throw new Error('usage: ort_bench.js bench|run|serve ... (see the comment at the top of this file)');
}

main().catch((e) => {
  process.stderr.write(`ort_bench: ${e.message || e}\n`);
  process.exit(1);
});
