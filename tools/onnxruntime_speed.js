'use strict';
// What int8 buys in ONNX Runtime: an exported model's float graph (model_fp32.onnx) against its QDQ graph
// (model.onnx), both in the CPU execution provider with graph optimizations on, timed in interleaved rounds
// (one float run, one int8 run, ...) so that a noisy machine slows both alike; medians per model.
//
//   NODE_PATH=third_party/onnxruntime/node_modules node tools/onnxruntime_speed.js EXPORT_DIR C,H,W \
//       [--batches 1,64] [--threads 1,2] [--rounds 20] [--json]
//
// Prints one line per (batch, threads): the median milliseconds per batch of each model and the ratio
// float / int8 (above 1: int8 is faster); with --json, one JSON array of {batch, threads, float_ms, int8_ms}
// instead (what xdq reads for export.timing).
const ort = require('onnxruntime-node');
const path = require('path');

function option(args, name, fallback) {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

async function timeOnce(session, feeds) {
  const start = process.hrtime.bigint();
  await session.run(feeds);
  return Number(process.hrtime.bigint() - start) / 1e6;
}

async function compare(dir, shape, batch, threads, rounds, log) {
  const options = { executionProviders: ['cpu'], graphOptimizationLevel: 'all', intraOpNumThreads: threads,
                    interOpNumThreads: 1, logSeverityLevel: 3 };
  const float = await ort.InferenceSession.create(path.join(dir, 'model_fp32.onnx'), options);
  const int8 = await ort.InferenceSession.create(path.join(dir, 'model.onnx'), options);
  const dims = [batch, ...shape];
  const data = Float32Array.from({ length: dims.reduce((a, b) => a * b, 1) }, (_, i) => Math.sin(i * 0.37));
  const feeds = (s) => ({ [s.inputNames[0]]: new ort.Tensor('float32', data, dims) });
  for (let w = 0; w < 3; ++w) await timeOnce(float, feeds(float)), await timeOnce(int8, feeds(int8));
  const times = { float: [], int8: [] };
  for (let r = 0; r < rounds; ++r) {
    times.float.push(await timeOnce(float, feeds(float)));
    times.int8.push(await timeOnce(int8, feeds(int8)));
  }
  const f = median(times.float), q = median(times.int8);
  log(`batch ${String(batch).padStart(3)}  threads ${threads}  float ${f.toFixed(2)} ms  int8 ${q.toFixed(2)} ms  ` +
      `float/int8 ${(f / q).toFixed(2)}`);
  return { batch, threads, float_ms: f, int8_ms: q };
}

async function main() {
  const args = process.argv.slice(2);
  if (args.length < 2) throw new Error('usage: onnxruntime_speed.js EXPORT_DIR C,H,W [--batches 1,64] [--threads 1,2] [--rounds 20] [--json]');
  const [dir, shapeText] = args;
  const shape = shapeText.split(',').map(Number);
  const batches = option(args, '--batches', '1,64').split(',').map(Number);
  const threads = option(args, '--threads', '1,2').split(',').map(Number);
  const rounds = Number(option(args, '--rounds', '20'));
  const json = args.includes('--json');
  const log = json ? () => {} : console.log;
  log(`${dir}: ONNX Runtime ${require('onnxruntime-node/package.json').version}, ${rounds} interleaved rounds`);
  const timings = [];
  for (const b of batches) for (const t of threads) timings.push(await compare(dir, shape, b, t, rounds, log));
  if (json) console.log(JSON.stringify(timings));
}

main().catch((e) => {
  console.error(String(e && e.message ? e.message : e));
  process.exit(1);
});
