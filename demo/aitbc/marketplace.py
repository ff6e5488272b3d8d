"""Demo AITBC marketplace (:8102): serves offers, and crashes now and then
(AITBC_CRASH_EVERY seconds on average, 0 = never) so that systemd restarts
it and unitwatch counts restarts and failures.
"""

import random

import aitbc_demo


def offers(_body):
    return 200, {"offers": [{"gpu": "A100", "price": round(random.uniform(1, 3), 2)}]}


def main():
    aitbc_demo.crash_now_and_then("marketplace")
    aitbc_demo.serve("marketplace", 8102, {("GET", "/v1/offers"): offers}, aitbc_demo.Hang())


if __name__ == "__main__":
    main()
