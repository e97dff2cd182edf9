// What the browser tests share: counted checks, screenshots into SHOTS, and the exit status
// (non-zero when a check failed, none ran, or the test threw).
'use strict';
const path = require('path');

const shots = process.env.SHOTS || 'target/e2e';
let passed = 0;
let failed = 0;

function check(ok, what) {
  if (ok) {
    passed += 1;
    console.log(`ok - ${what}`);
  } else {
    failed += 1;
    console.log(`FAIL - ${what}`);
  }
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
}

// Runs `main`, then prints the counts and exits.
function run(main) {
  main().then(
    () => {
      console.log(`${passed} passed, ${failed} failed`);
      process.exit(failed === 0 && passed > 0 ? 0 : 1);
    },
    (e) => {
      console.error(e);
      console.log(`${passed} passed, ${failed + 1} failed`);
      process.exit(1);
    },
  );
}

module.exports = { check, shot, run, shots };
