"""Starts the worker programs of `tests/workers` and reads back their results."""

import os
import signal
import subprocess
import sys
import time

import numpy as np

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO_DIR = os.path.dirname(TESTS_DIR)


def jax_cache_env(cache_dir):
    """The environment variables that point JAX's persistent compilation
    cache at `cache_dir` and let it keep every executable, however small."""
    return {
        "JAX_COMPILATION_CACHE_DIR": str(cache_dir),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }


def worker_env(cache_dir=None, **extra):
    """The environment of a worker: this backend, `tests/` importable.

    Args:
        cache_dir: Optional directory of JAX's persistent compilation cache,
            shared by the workers of a test session: later workers load the
            executables that earlier ones compiled (the same code, so the
            same numbers) instead of compiling them again.
        **extra: More environment variables.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [TESTS_DIR, REPO_DIR] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    if cache_dir is not None:
        env.update(jax_cache_env(cache_dir))
    env.update({key: str(value) for key, value in extra.items()})
    return env


def start_worker(module, *args, log, env=None):
    """Starts `python -m workers.<module> *args`, its output going to `log`."""
    with open(log, "w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", f"workers.{module}", *map(str, args)],
            env=env or worker_env(),
            cwd=REPO_DIR,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    process.log = log
    return process


def wait_for(processes, timeout=300):
    """Waits for all processes to succeed.

    As soon as one fails, or when `timeout` seconds have passed, the others
    are killed (workers of one cluster would wait for each other forever)
    and an `AssertionError` shows the end of each one's output.
    """
    deadline = time.monotonic() + timeout
    try:
        while any(process.poll() is None for process in processes):
            failed = any(process.returncode not in (None, 0) for process in processes)
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    if any(process.returncode != 0 for process in processes):
        reports = []
        for process in processes:
            with open(process.log) as output:
                tail = output.read()[-6000:]
            reports.append(f"{' '.join(process.args)} exited with {process.returncode}:\n{tail}")
        raise AssertionError("\n\n".join(reports))


def kill_when_marked(process, marker, timeout=300):
    """SIGKILLs `process` once it has written the file `marker`."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(marker):
        if process.poll() is not None:
            wait_for([process])  # raises with the worker's output
            raise AssertionError("the worker finished without reaching the crash point")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("the worker did not reach the crash point in time")
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL


def run_worker(module, *args, log, env=None, timeout=300):
    """Runs one worker to completion; fails with its output if it fails."""
    wait_for([start_worker(module, *args, log=log, env=env)], timeout=timeout)


def student_arrays(prefix, student):
    """A worker's student weights, keyed for `np.savez`."""
    return {
        f"{prefix}/student/{index}": np.asarray(weight)
        for index, weight in enumerate(student.weights)
    }


def student_weights(results, prefix):
    """The weights that `student_arrays` saved under `prefix`, in order."""
    keys = sorted(
        (key for key in results if key.startswith(f"{prefix}/student/")),
        key=lambda key: int(key.rsplit("/", 1)[1]),
    )
    assert keys, f"no student weights under {prefix!r}"
    return [results[key] for key in keys]
