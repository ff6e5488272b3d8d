"""Demo AITBC settlement: a job, not a service. aitbc-settlement.timer runs
it every 20 s as a Type=oneshot service; each run settles the marketplace's
last batch in AITBC_SETTLEMENT_SECONDS to twice that (1-2 s), then exits.
Every AITBC_SETTLEMENT_FAIL_EVERY-th run (5 by default, 0 = never) fails
with exit status 1, so that unitwatch shows a job's runs by result, its last
result and JobFailed until the next run succeeds. The run number is kept in
the unit's StateDirectory=, so the failures come at a steady rhythm. It
exports no metrics of its own (it does not import aitbc_demo): what a job
did is systemd's to record and unitwatch's to export.
"""

import os
import sys
import time


def env_float(name, default):
    """A number from the environment (the unit's Environment= lines)."""
    value = os.environ.get(name, "")
    try:
        return float(value) if value else default
    except ValueError:
        sys.exit(f"{name}={value!r}: not a number")


def next_run_number():
    """This run's number, 1 for the first: one more than the last one's."""
    state = os.environ.get("STATE_DIRECTORY", "/var/lib/aitbc-settlement")
    path = os.path.join(state.split(":")[0], "runs")
    try:
        with open(path) as f:
            last = int(f.read().strip() or 0)
    except (FileNotFoundError, ValueError):
        last = 0
    run = last + 1
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        f.write(f"{run}\n")
    os.replace(path + ".tmp", path)
    return run


def main():
    seconds = env_float("AITBC_SETTLEMENT_SECONDS", 1)
    fail_every = int(env_float("AITBC_SETTLEMENT_FAIL_EVERY", 5))
    run = next_run_number()
    # 1, 1.5, 2 times the base, in turn: the duration histogram has a spread.
    took = seconds * (1 + (run % 3) / 2)
    print(f"settlement {run}: settling the last batch", file=sys.stderr, flush=True)
    time.sleep(took)
    if fail_every > 0 and run % fail_every == 0:
        print(f"settlement {run}: ledger mismatch, batch not settled", file=sys.stderr, flush=True)
        sys.exit(1)
    print(f"settlement {run}: batch settled in {took:.1f} s", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
