#!/usr/bin/env node
// Compiles every event schema with ajv 8 in strict mode, as docs recommend loading them
// (ajv/dist/2020 for draft 2020-12, plus ajv-formats), and validates events against them.
// Used by tests/integration/test_schemas_in_other_tools.py.
//
//   node ajv_check.js SCHEMA_DIR EVENTS.json
//
// EVENTS.json: [{"schema": "task.created.schema.json", "event": {...}}, ...].
// Prints one JSON line: {"compiled": [...], "failed": {"file": "error"}, "verdicts": [true | "errors", ...]}.
'use strict';

const fs = require('fs');
const path = require('path');
const Ajv2020 = require('ajv/dist/2020');
const addFormats = require('ajv-formats');

const [dir, eventsPath] = process.argv.slice(2);
const ajv = new Ajv2020({ strict: true, allErrors: true });
addFormats(ajv);
const compiled = [];
const failed = {};
const validators = {};
for (const file of fs.readdirSync(dir).filter((f) => f.endsWith('.schema.json')).sort()) {
  try {
    validators[file] = ajv.compile(JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8')));
    compiled.push(file);
  } catch (error) {
    failed[file] = String(error.message || error);
  }
}
const verdicts = JSON.parse(fs.readFileSync(eventsPath, 'utf8')).map(({ schema, event }) => {
  const validate = validators[schema];
  if (!validate) return `no schema ${schema}`;
  return validate(event) ? true : ajv.errorsText(validate.errors);
});
process.stdout.write(JSON.stringify({ compiled, failed, verdicts }) + '\n');
