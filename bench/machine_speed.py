"""The machine's current speed: seconds for a fixed pure-Python loop (20 million additions at module level,
one core).

Run it before and after a timed command (e.g. `make demo`) to tell a slower phase of a shared machine from a
slower change; on one 2-core machine this loop took 1.78-3.65 s within a day. (The loop runs on module
globals on purpose: the README's figures were taken with exactly this code.)

    python bench/machine_speed.py
"""

import time

if __name__ == "__main__":
    t = time.perf_counter()
    x = 0
    for i in range(20_000_000):
        x += i
    print(f"{time.strftime('%H:%M:%S')} python loop, 20M additions: {time.perf_counter() - t:.2f} s")
