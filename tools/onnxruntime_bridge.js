'use strict';
// Runs exported ONNX models in ONNX Runtime's CPU execution provider for xdq (core/src/export/onnxruntime.cpp),
// one process per export: batches in on stdin, outputs back on stdout, little-endian binary frames.
//
//   node onnxruntime_bridge.js THREADS OPTIMIZED_OUT MODEL [MODEL ...]
//
// Each MODEL becomes a session (graph optimizations on; the first one's optimized graph is saved to
// OPTIMIZED_OUT unless it is "-"). Frames:
//   hello     u32 0x31545258, u32 sessions, then per session u32 outputs and per output u32 length + name
//   request   u32 session (0xffffffff: quit), u32 rank, i64 dims[rank], f32 data
//   reply     u32 outputs, then per output u32 rank, i64 dims[rank], f32 data
//   error     u32 0xfffffffe, u32 length, UTF-8 message (instead of a hello or a reply)
// Needs the npm package onnxruntime-node on NODE_PATH.
const fs = require('fs');

const HELLO = 0x31545258, QUIT = 0xffffffff, ERROR = 0xfffffffe;

function readExactly(bytes) {
  const buffer = Buffer.alloc(bytes);
  let done = 0;
  while (done < bytes) {
    let n;
    try {
      n = fs.readSync(0, buffer, done, bytes - done, null);
    } catch (e) {
      if (e.code === 'EAGAIN') continue;
      throw e;
    }
    if (n === 0) throw new Error('stdin closed');
    done += n;
  }
  return buffer;
}

function writeAll(buffer) {
  let done = 0;
  while (done < buffer.length) {
    try {
      done += fs.writeSync(1, buffer, done, buffer.length - done);
    } catch (e) {
      if (e.code !== 'EAGAIN') throw e;
    }
  }
}

function u32(value) {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(value >>> 0);
  return b;
}

function text(message) {
  const bytes = Buffer.from(message, 'utf8');
  return Buffer.concat([u32(bytes.length), bytes]);
}

function tensorFrame(dims, data) {
  const header = Buffer.alloc(4 + 8 * dims.length);
  header.writeUInt32LE(dims.length);
  dims.forEach((d, i) => header.writeBigInt64LE(BigInt(d), 4 + 8 * i));
  return Buffer.concat([header, Buffer.from(data.buffer, data.byteOffset, data.byteLength)]);
}

function readRequest() {
  const session = readExactly(4).readUInt32LE(0);
  if (session === QUIT) return null;
  const rank = readExactly(4).readUInt32LE(0);
  const dimsBuffer = readExactly(8 * rank);
  const dims = [];
  let count = 1;
  for (let i = 0; i < rank; ++i) {
    dims.push(Number(dimsBuffer.readBigInt64LE(8 * i)));
    count *= dims[i];
  }
  const bytes = readExactly(4 * count);
  const data = new Float32Array(bytes.buffer, bytes.byteOffset, count);
  return { session, dims, data };
}

async function main() {
  const [threads, optimizedOut, ...models] = process.argv.slice(2);
  const ort = require('onnxruntime-node');
  const sessions = [];
  for (let i = 0; i < models.length; ++i) {
    const options = {
      executionProviders: ['cpu'],
      graphOptimizationLevel: 'all',
      intraOpNumThreads: Number(threads),
      interOpNumThreads: 1,
      logSeverityLevel: 3,  // errors only: not the warning that a saved optimized graph is specific to this CPU
    };
    if (i === 0 && optimizedOut !== '-') options.optimizedModelFilePath = optimizedOut;
    sessions.push(await ort.InferenceSession.create(models[i], options));
  }
  const hello = [u32(HELLO), u32(sessions.length)];
  for (const s of sessions) {
    hello.push(u32(s.outputNames.length));
    for (const name of s.outputNames) hello.push(text(name));
  }
  writeAll(Buffer.concat(hello));
  for (;;) {
    const request = readRequest();
    if (request === null) return;
    const session = sessions[request.session];
    if (!session) throw new Error('no session ' + request.session);
    const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', request.data, request.dims) };
    const results = await session.run(feeds);
    const reply = [u32(session.outputNames.length)];
    for (const name of session.outputNames) {
      const t = results[name];
      if (t.type !== 'float32') throw new Error(`output '${name}' is ${t.type}, not float32`);
      reply.push(tensorFrame(t.dims, t.data));
    }
    writeAll(Buffer.concat(reply));
  }
}

main().catch((e) => {
  try {
    writeAll(Buffer.concat([u32(ERROR), text(String(e && e.message ? e.message : e))]));
  } finally {
    process.exit(1);
  }
});
