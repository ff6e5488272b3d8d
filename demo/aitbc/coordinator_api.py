"""Demo AITBC coordinator API (:8011): takes jobs (POST /v1/jobs; a built-in
client submits AITBC_JOB_RATE per second) and runs them on AITBC_WORKERS
workers, instrumented exactly as the monitoring plan's "Job Processing Time
Monitoring" shows. What the tests force an alert with:
  AITBC_JOB_SECONDS        mean execution time (slow jobs: JobProcessingTooSlow)
  AITBC_JOB_FAILURE_RATIO  share of jobs failing (over 0.05: HighFailureRate)
  AITBC_JOB_RATE, AITBC_WORKERS  more jobs than workers: HighJobQueue
  SIGUSR1 / AITBC_HANG_EVERY     a hang: ServiceUnhealthy
"""

import http.client
import json
import queue
import random
import threading
import time

from prometheus_client import Counter, Gauge, Histogram

import aitbc_demo

# --- The plan's metrics, as written there. ---
job_submission_duration = Histogram(
    'job_submission_duration_seconds',
    'Time to submit a job',
    buckets=[0.1, 0.5, 1.0, 2.0, 5.0]
)

job_processing_duration = Histogram(
    'job_processing_duration_seconds',
    'Time to complete a job from submission to result',
    buckets=[1.0, 5.0, 10.0, 30.0, 60.0, 300.0]
)

job_queue_duration = Histogram(
    'job_queue_duration_seconds',
    'Time job spends in queue before assignment',
    buckets=[1.0, 5.0, 10.0, 30.0, 60.0]
)

job_execution_duration = Histogram(
    'job_execution_duration_seconds',
    'Time for actual GPU execution',
    buckets=[1.0, 5.0, 10.0, 30.0, 60.0, 300.0]
)

jobs_total = Counter(
    'jobs_total',
    'Total number of jobs processed',
    ['status']
)

jobs_in_queue = Gauge(
    'jobs_in_queue',
    'Number of jobs currently in queue'
)

# Listed among the plan's metrics but missing from its code.
jobs_failed_total = Counter('jobs_failed_total', 'Total number of failed jobs')

RATE = aitbc_demo.env_float("AITBC_JOB_RATE", 2.0)
WORKERS = int(aitbc_demo.env_float("AITBC_WORKERS", 4))
JOB_SECONDS = aitbc_demo.env_float("AITBC_JOB_SECONDS", 0.5)
FAILURE_RATIO = aitbc_demo.env_float("AITBC_JOB_FAILURE_RATIO", 0.01)
PORT = 8011

jobs = queue.Queue()
for status in ("completed", "failed"):
    jobs_total.labels(status)


def submit(body):
    with job_submission_duration.time():
        job = json.loads(body or b"{}")
        job["submitted"] = time.monotonic()
        time.sleep(random.uniform(0.001, 0.01))  # validating and storing the job
        jobs.put(job)
        jobs_in_queue.inc()
    return 200, {"accepted": True}


def work(hang):
    while True:
        job = jobs.get()
        jobs_in_queue.dec()
        hang.wait()
        job_queue_duration.observe(time.monotonic() - job["submitted"])
        with job_execution_duration.time():
            time.sleep(max(0.0, random.gauss(JOB_SECONDS, JOB_SECONDS / 5)))
        failed = random.random() < FAILURE_RATIO
        jobs_total.labels("failed" if failed else "completed").inc()
        if failed:
            jobs_failed_total.inc()
        job_processing_duration.observe(time.monotonic() - job["submitted"])


def client():
    """Submits jobs over HTTP, as the platform's clients would."""
    if RATE <= 0:
        return
    n = 0
    while True:
        time.sleep(random.expovariate(RATE))
        n += 1
        try:
            conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
            conn.request("POST", "/v1/jobs", json.dumps({"id": n, "model": "demo"}),
                         {"Content-Type": "application/json"})
            conn.getresponse().read()
            conn.close()
        except OSError:
            time.sleep(0.5)  # not serving yet, or hung: try again later


def main():
    hang = aitbc_demo.Hang()
    for _ in range(WORKERS):
        threading.Thread(target=work, args=(hang,), daemon=True).start()
    threading.Thread(target=client, daemon=True).start()
    aitbc_demo.serve("coordinator-api", PORT, {("POST", "/v1/jobs"): submit}, hang)


if __name__ == "__main__":
    main()
