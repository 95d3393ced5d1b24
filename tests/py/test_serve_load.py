"""A bounded load test of `chexnet serve` (tests/py/loadtest.py): 16
concurrent clients, 10% malformed bodies (truncated, wrong type, huge
declared dimensions, garbage and truncated DICOM, JPEG 2000), with dynamic
batching and without. Zero crashes, zero wrong answers (every valid body gets
exactly chexnet predict's probabilities, every malformed one its 4xx code),
a clean exit on SIGTERM, and resident memory flat after warm-up (within 25%
and 64 MB). The full run of the README's figures is
`tests/py/loadtest.py --requests 10000`; this one is shorter so that CI stays
bounded.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import cxtest  # noqa: E402
import loadtest  # noqa: E402

passes, failures = [], []


def check(name, ok, detail=""):
    print(("PASS " if ok else "FAIL ") + name + (": " + detail if detail else ""), flush=True)
    (passes if ok else failures).append(name)


def main():
    src = os.environ.get("CX_SOURCE") or os.path.join(os.path.dirname(__file__), "..", "..")
    model = os.path.join(src, "models", "chexnet-pneumonia.safetensors")
    if not os.path.exists(model):
        cxtest.skip("the shipped model is absent")
    cxtest.shared("nih", "images")
    for label, n, batch in (("with dynamic batching", 400, 16), ("without batching", 200, 1)):
        r = loadtest.run(model, n_requests=n, clients=16, malformed=0.1, max_batch=batch,
                         max_wait_ms=10 if batch > 1 else 0)
        print("%s: %d requests (%d malformed) in %.1f s: p50 %.0f ms, p99 %.0f ms, %.2f "
              "images/s, mean batch %.2f, RSS %.0f MB after warm-up, %.0f MB at the end" %
              (label, r["requests"], r["malformed"], r["seconds"], r["p50_ms"], r["p99_ms"],
               r["images_per_s"], r["mean_batch"] or 0, r["rss_mb_after_warmup"] or 0,
               r["rss_mb_end"] or 0))
        check("%s: no wrong answers" % label, r["wrong_answers"] == 0,
              "; ".join(r["examples_wrong"]))
        check("%s: no connection errors" % label, r["transport_errors"] == 0,
              "; ".join(r["examples_errors"]))
        check("%s: the server survived and exited 0 on SIGTERM" % label,
              r["server_alive_at_end"] and r["exit_status"] == 0, str(r["server_stderr_tail"]))
        w, e, mx = r["rss_mb_after_warmup"], r["rss_mb_end"], r["rss_mb_max_after_warmup"]
        check("%s: resident memory flat after warm-up" % label,
              w is not None and mx <= max(1.25 * w, w + 64),
              "%.0f MB after warm-up, at most %.0f, %.0f at the end" % (w or 0, mx or 0, e or 0))
        if batch > 1:
            check("%s: requests shared forward passes" % label, (r["mean_batch"] or 0) > 1.5,
                  "mean batch %.2f" % (r["mean_batch"] or 0))
    print("%d passed, %d failed" % (len(passes), len(failures)))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
