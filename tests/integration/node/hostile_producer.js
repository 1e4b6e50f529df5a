#!/usr/bin/env node
// A producer that is not devtrail's: kafkajs, publishing raw bytes as a service written in
// Node would. Used by tests/integration/test_hostile_node_client.py.
//
//   node hostile_producer.js BROKERS RECORDS.json
//
// BROKERS: comma-separated host:port. RECORDS.json: a JSON array of records
//   {"topic": "...", "partition": 0, "key": "text" | null, "key_base64": "...", "value_base64": "..." | null}
// ("partition" optional: kafkajs' default partitioner then; "key_base64" wins over "key";
// a null "value_base64" sends a tombstone). Records are sent one by one, in order,
// uncompressed, with acks -1 (all in-sync replicas), so that each one's offset is known.
//
// Prints one JSON line: {"sent": N, "failed": F, "results": [[partition, offset] | {"error": "..."}]}.
// Exits 1 when a record could not be sent.
'use strict';

const fs = require('fs');
const { Kafka, CompressionTypes, Partitioners, logLevel } = require('kafkajs');

async function main() {
  const [brokers, recordsPath] = process.argv.slice(2);
  if (!brokers || !recordsPath) {
    console.error('usage: node hostile_producer.js BROKERS RECORDS.json');
    process.exit(2);
  }
  const records = JSON.parse(fs.readFileSync(recordsPath, 'utf8'));
  const kafka = new Kafka({
    clientId: 'devtrail-hostile-node-client',
    brokers: brokers.split(','),
    logLevel: logLevel.WARN,
    requestTimeout: 60000,
    retry: { retries: 5 },
  });
  const producer = kafka.producer({
    createPartitioner: Partitioners.DefaultPartitioner,
    allowAutoTopicCreation: false,
    idempotent: false,
    maxInFlightRequests: 1,
  });
  await producer.connect();
  const results = [];
  let sent = 0;
  try {
    for (const record of records) {
      const message = {
        key: record.key_base64 != null ? Buffer.from(record.key_base64, 'base64') : record.key ?? null,
        value: record.value_base64 == null ? null : Buffer.from(record.value_base64, 'base64'),
      };
      if (record.partition != null) message.partition = record.partition;
      try {
        const [meta] = await producer.send({
          topic: record.topic,
          acks: -1,
          compression: CompressionTypes.None,
          messages: [message],
        });
        results.push([meta.partition, Number(meta.baseOffset)]);
        sent += 1;
      } catch (err) {
        results.push({ error: `${err.name}: ${err.message}` });
      }
    }
  } finally {
    await producer.disconnect();
  }
  process.stdout.write(JSON.stringify({ sent, failed: records.length - sent, results }) + '\n');
  process.exitCode = sent === records.length ? 0 : 1;
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : String(err));
  process.exit(1);
});
