#!/usr/bin/env node
// A downstream consumer that is not devtrail's: kafkajs reading the clean topic as a
// service written in Node would, following docs/consumers.md. Used by
// tests/integration/test_other_consumers.py.
//
//   node clean_reader.js BROKERS TOPIC EXPECTED_EVENTS TIMEOUT_MS
//
// Reads TOPIC from the beginning (its own consumer group), decodes every clean message
// ({"columns": [...], "rows": [[...], ...]}) and stops once EXPECTED_EVENTS rows were read
// or TIMEOUT_MS passed. Prints one JSON line:
//   {"messages": M, "rows": [{"event_id": ..., "event_type": ..., "payload": {...}}, ...]}
'use strict';

const { Kafka, CompressionTypes, CompressionCodecs, logLevel } = require('kafkajs');
const SnappyCodec = require('kafkajs-snappy');

// devtrail's workers publish snappy by default (DEVTRAIL_KAFKA_SHARED_COMPRESSION_TYPE):
// kafkajs reads gzip by itself and snappy once this codec is registered.
CompressionCodecs[CompressionTypes.Snappy] = SnappyCodec;

async function main() {
  const [brokers, topic, expectedText, timeoutText] = process.argv.slice(2);
  const expected = Number(expectedText);
  const kafka = new Kafka({ clientId: 'devtrail-clean-reader', brokers: brokers.split(','), logLevel: logLevel.WARN });
  const consumer = kafka.consumer({ groupId: `clean-reader-${process.pid}-${Date.now()}` });
  const rows = [];
  let messages = 0;
  let finish;
  const done = new Promise((resolve) => { finish = resolve; });
  const timer = setTimeout(() => finish(), Number(timeoutText));
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ message }) => {
      messages += 1;
      const bundle = JSON.parse(message.value.toString('utf8'));
      const at = Object.fromEntries(bundle.columns.map((name, i) => [name, i]));
      for (const row of bundle.rows) {
        rows.push({
          event_id: row[at.event_id],
          event_type: row[at.event_type],
          task_id: row[at.task_id],
          payload: JSON.parse(row[at.payload]),
        });
      }
      if (rows.length >= expected) finish();
    },
  });
  await done;
  clearTimeout(timer);
  await consumer.disconnect();
  process.stdout.write(JSON.stringify({ messages, rows }) + '\n');
}

main().catch((error) => {
  console.error(error && error.stack ? error.stack : String(error));
  process.exit(1);
});
