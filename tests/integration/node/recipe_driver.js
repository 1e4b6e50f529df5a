#!/usr/bin/env node
// Drives the TypeScript recipe of docs/producers.md, compiled to JavaScript, for
// tests/integration/test_typescript_producer.py: events made with its newEvent() and sent
// with its publish(), a misrouted one, and kafkajs' partitioners asked about keys.
//
//   node recipe_driver.js RECIPE.js SPEC.json
//
// SPEC.json: {
//   "brokers": "host:port,...", "prefix": "t123",
//   "bundled": [template], "single": [template],  // template: {"event_type", "source", "fields"}
//   "misrouted": [{"family": "task", "template": template}],
//   "keys": ["T-1", ...], "partitions": 4
// }
// Prints one JSON line: {"bundled": [event], "single": [event], "misrouted": [event],
//   "partitioners": {"default": [partition per key], "legacy": [...], "murmur2": [hash per key]}}.
'use strict';

const fs = require('fs');
const { Partitioners } = require('kafkajs');
const murmur2 = require('kafkajs/src/producer/partitioners/default/murmur2');

async function main() {
  const [recipePath, specPath] = process.argv.slice(2);
  const recipe = require(recipePath);
  const spec = JSON.parse(fs.readFileSync(specPath, 'utf8'));
  const make = (t) => recipe.newEvent(t.event_type, t.source, t.fields);
  const result = { bundled: spec.bundled.map(make), single: spec.single.map(make) };
  result.misrouted = spec.misrouted.map((m) => make(m.template));

  const producer = recipe.createProducer(spec.brokers.split(','));
  await producer.connect();
  try {
    await recipe.publish(producer, result.bundled, spec.prefix, true);
    await recipe.publish(producer, result.single, spec.prefix, false);
    for (const [i, m] of spec.misrouted.entries()) {
      const event = result.misrouted[i];
      await producer.send({
        topic: `${spec.prefix}.${m.family}`,
        acks: -1,
        messages: [{ key: recipe.partitionKey(event), value: JSON.stringify(event) }],
      });
    }
  } finally {
    await producer.disconnect();
  }

  const partitionMetadata = [...Array(spec.partitions).keys()].map((partitionId) => ({ partitionId, leader: 0 }));
  const pick = (create) => {
    const partitioner = create();
    return spec.keys.map((key) => partitioner({ topic: 't', partitionMetadata, message: { key: Buffer.from(key) } }));
  };
  result.partitioners = {
    default: pick(Partitioners.DefaultPartitioner),
    legacy: pick(Partitioners.LegacyPartitioner),
    murmur2: spec.keys.map((key) => murmur2(Buffer.from(key))),
  };
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : String(err));
  process.exit(1);
});
