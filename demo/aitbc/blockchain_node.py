"""Demo AITBC blockchain node (:8080): produces a block every
AITBC_BLOCK_INTERVAL seconds, instrumented exactly as the monitoring plan's
"Block Processing Time Monitoring" shows. AITBC_BLOCK_PROCESSING_SECONDS sets
how long processing a block takes (over 1 s fires BlockProcessingTooSlow).
"""

import random
import threading
import time

from prometheus_client import Counter, Gauge, Histogram

import aitbc_demo

# --- The plan's metrics, as written there. ---
block_processing_duration = Histogram(
    'block_processing_duration_seconds',
    'Time to process a block',
    buckets=[0.1, 0.5, 1.0, 2.0, 5.0, 10.0]
)

block_height = Gauge(
    'block_height',
    'Current blockchain height'
)

block_validation_duration = Histogram(
    'block_validation_duration_seconds',
    'Time to validate a block',
    buckets=[0.01, 0.05, 0.1, 0.5, 1.0]
)

block_propagation_duration = Histogram(
    'block_propagation_duration_seconds',
    'Time to propagate block to peers',
    buckets=[0.1, 0.5, 1.0, 2.0, 5.0]
)

# --- Named by the plan's dashboards, not its metrics (see README). ---
block_transactions = Histogram(
    'block_transactions',
    'Transactions in a block',
    buckets=[0, 1, 5, 10, 25, 50, 100, 250]
)
network_peers = Gauge('network_peers', 'Connected peers')
blocks_total = Counter('blocks_total', 'Blocks produced')

INTERVAL = aitbc_demo.env_float("AITBC_BLOCK_INTERVAL", 1.0)
PROCESSING = aitbc_demo.env_float("AITBC_BLOCK_PROCESSING_SECONDS", 0.05)
PEERS = int(aitbc_demo.env_float("AITBC_PEERS", 8))


def jitter(seconds):
    """A duration around `seconds`, never negative."""
    return max(0.0, random.gauss(seconds, seconds / 5))


def produce(hang):
    height = 0
    while True:
        hang.wait()
        start = time.monotonic()
        with block_processing_duration.time():
            txs = random.randint(0, 60)
            with block_validation_duration.time():
                time.sleep(jitter(0.01 + txs / 10000))
            time.sleep(jitter(PROCESSING))
            height += 1
            block_height.set(height)
            block_transactions.observe(txs)
            blocks_total.inc()
        with block_propagation_duration.time():
            time.sleep(jitter(0.05))
        network_peers.set(max(0, PEERS + random.randint(-1, 1)))
        time.sleep(max(0.0, INTERVAL - (time.monotonic() - start)))


def main():
    hang = aitbc_demo.Hang()
    threading.Thread(target=produce, args=(hang,), daemon=True).start()
    aitbc_demo.serve(
        "blockchain-node", 8080,
        {("GET", "/v1/blocks/head"): lambda _b: (200, {"height": block_height._value.get()})},
        hang,
    )


if __name__ == "__main__":
    main()
