"""Building one teacher cache in shards: which epochs each shard computes, and its progress.

`build_teacher_cache(..., shard=(i, N))` (`keras-unikd cache-teacher ...
--shard I --num-shards N`) computes the epochs `e` with `e % N == i`, so N
processes, on one machine or on several, build one cache together. Sharding
is by epoch, not by rows within an epoch:

- every array file is written by one process, start to end, as in a
  one-process build: no two processes ever share a memory-mapped file;
- an epoch's batches are the same in every shard and in a one-process
  build (the keyed pipeline's batches of `batch_size` of that epoch), so
  the teacher sees the same batches and the files come out byte for byte
  equal to a one-process build's (with the same `batch_size`, backend,
  library versions and kind of device);
- the caches this is for hold hundreds of epochs (240 for CIFAR-100), so
  the shards are balanced to within an epoch; for a cache of fewer epochs
  than shards, the extra shards have nothing to do.

Progress: the manifest (`manifest.json`) is written by one process only
when none is running a shard. Each shard records its finished epochs in
its own small file, `shard-<i>-of-<N>.json`, written atomically (a
temporary file, fsync, rename), so concurrent shards never write the same
file and a kill at any point leaves every file whole; no lock is taken, so
none is ever left stale. The cache's complete epochs are those of the
manifest and of every shard file (`open_teacher_cache` reads them all).
A shard that finishes and finds every shard finished merges the shard files
into the manifest and deletes them, leaving exactly the files of a
one-process build. Rerunning a shard resumes it; rerunning a finished one
only merges.

Shards may share the cache's directory (the natural case: one file system
mounted everywhere), or write to separate directories that are then
copied into one (`rsync -a shard0/ shard1/ cache/`): the copies' manifests
are the same, and each shard file records a digest of what its cache holds,
so a shard file of another cache is an error, never mixed in.
"""

import hashlib
import json
import os
import re

from keras_unikd import atomic_files
from keras_unikd.cache import manifest as mf
from keras_unikd.validation import check_int
from keras_unikd.validation import check_positive_int

_FILE = re.compile(r"shard-(\d+)-of-(\d+)\.json")
_RECORD = ("cache", "epochs", "epochs_complete", "build_seconds")
# The manifest fields that say what a cache holds (with the teacher's weights).
_CONTENTS = ("format", "format_version", "dataset", "augmentation", "seed", "views",
             "outputs", "dtype", "arrays")  # fmt: skip


def check_shard(shard, fn):
    """`shard` as `(index, num_shards)` ints (or `None`), else a `ValueError`."""
    if shard is None:
        return None
    if not isinstance(shard, (tuple, list)) or len(shard) != 2:
        raise ValueError(
            f"{fn}: `shard` must be None or (index, num_shards), e.g. (0, 2) for the "
            f"first of two shards; got {shard!r}."
        )
    count = check_positive_int("num_shards", shard[1], fn=fn)
    index = check_int(
        "shard index", shard[0], high=count, fn=fn,
        hint=f" The shards of {count} are numbered 0 .. {count - 1}.",
    )  # fmt: skip
    return index, count


def shard_epochs(shard, epochs):
    """The epochs below `epochs` that `shard` computes (all of them for `None`)."""
    return list(range(epochs)) if shard is None else list(range(shard[0], epochs, shard[1]))


def shard_path(directory, shard):
    return os.path.join(directory, f"shard-{shard[0]}-of-{shard[1]}.json")


def contents_digest(manifest):
    """A digest of what a cache holds and of which teacher, data and views."""
    fields = {key: manifest[key] for key in _CONTENTS}
    fields["teacher"] = manifest["teacher"]["weights_sha256"]
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def read_progress(directory, fn):
    """The manifest and the shard files' records of the cache at `directory`.

    The shard files are read before the manifest: a merge writes the
    manifest before deleting them, so the epochs of a shard file deleted
    meanwhile are in the manifest read after it.
    """
    records = []
    names = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
    for name in names:
        match = _FILE.fullmatch(name)
        if match:
            record = _read_record(os.path.join(directory, name), fn)
            if record is not None:
                records.append(dict(record, shard=[int(match[1]), int(match[2])]))
    manifest = mf.read_manifest(directory, fn)
    digest = contents_digest(manifest)
    for record in records:
        if record.get("cache") != digest:
            raise ValueError(
                f"{fn}: {shard_path(directory, record['shard'])!r} records a shard of "
                "another teacher cache (another teacher, data, augmentation, seed, "
                "views, outputs or dtype than its manifest.json). Delete that file "
                "(the epochs it records are then computed again)."
            )
    return manifest, records


def _read_record(path, fn):
    try:
        with open(path) as file:
            record = json.load(file)
    except FileNotFoundError:  # merged and deleted meanwhile
        return None
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(
            f"{fn}: the shard progress file {path!r} cannot be read ({error}). Delete it "
            "and rerun that shard: the epochs it records are computed again."
        ) from None
    if not isinstance(record, dict) or not set(_RECORD) <= set(record):
        raise ValueError(
            f"{fn}: {path!r} is not a shard progress file of a teacher cache. Delete it "
            "and rerun that shard."
        )
    return record


def complete_epochs(manifest, records):
    """The complete epochs: the manifest's and every shard file's."""
    complete = set(manifest["epochs_complete"])
    for record in records:
        complete.update(record["epochs_complete"])
    return complete


def unfinished(records, complete):
    """`{(index, num_shards): [missing epochs]}` of the shards not finished.

    For each shard count of the shard files, every shard of it (started or
    not) is to compute its epochs below the largest `epochs` of its files.
    """
    targets = {}
    for record in records:
        count = record["shard"][1]
        targets[count] = max(targets.get(count, 0), int(record["epochs"]))
    missing = {}
    for count, epochs in sorted(targets.items()):
        for epoch in range(epochs):
            if epoch not in complete:
                missing.setdefault((epoch % count, count), []).append(epoch)
    return missing


def describe(pending):
    """`"shard 1 of 2 (epochs 1, 3 missing), ..."`."""
    return ", ".join(
        f"shard {index} of {count} (epoch{'s' if len(epochs) > 1 else ''} "
        f"{_epochs(epochs)} missing)"
        for (index, count), epochs in sorted(pending.items())
    )


def finish_hint(pending):
    """How to finish the `pending` shards, as a sentence."""
    shards = sorted(pending)
    python = ", ".join(f"shard=({index}, {count})" for index, count in shards)
    cli = ", ".join(f"--shard {index} --num-shards {count}" for index, count in shards)
    return (
        "Finish them: rerun each with the arguments it was started with, "
        f"build_teacher_cache(..., {python}) (keras-unikd cache-teacher ... {cli}); "
        "a rerun resumes where the shard stopped."
    )


def _epochs(epochs):
    text = ", ".join(str(epoch) for epoch in epochs[:8])
    return text + (f", ... ({len(epochs)} in all)" if len(epochs) > 8 else "")


def shard_status(directory):
    """The shards of a teacher cache still to finish, and their missing epochs.

    Args:
        directory: A teacher cache's directory, built (or being built) with
            `build_teacher_cache(..., shard=(index, num_shards))`.

    Returns:
        `{(index, num_shards): [missing epochs]}`, empty when every shard
        started so far has finished (a shard not started yet counts as
        unfinished once another shard of its count has started).

    Raises:
        ValueError: If `directory` holds no teacher cache, or a shard file of
            another cache.

    Example:

    >>> import keras, numpy as np, tempfile
    >>> from keras_unikd import terms
    >>> from keras_unikd.cache import build_teacher_cache
    >>> teacher = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
    ...                             keras.layers.Dense(3)])
    >>> x, y = np.zeros((3, 4, 4, 1), "uint8"), np.array([0, 1, 2])
    >>> directory = tempfile.mkdtemp()
    >>> build_teacher_cache(directory, teacher, [terms.KD()], x, y, seed=0, epochs=3,
    ...                     shard=(0, 2), verbose=0) is None  # epochs 0 and 2
    True
    >>> shard_status(directory)
    {(1, 2): [1]}
    """
    manifest, records = read_progress(directory, "shard_status")
    return unfinished(records, complete_epochs(manifest, records))


def merge(directory, fn):
    """Merges the shard files into the manifest once no shard is unfinished.

    Returns:
        The manifest, with every complete epoch (the shard files then
        deleted), or `None` while a shard is unfinished.
    """
    manifest, records = read_progress(directory, fn)
    complete = complete_epochs(manifest, records)
    if unfinished(records, complete):
        return None
    if records:
        manifest["epochs_complete"] = sorted(complete)
        manifest["epochs"] = max([int(manifest["epochs"])] + [r["epochs"] for r in records])
        for record in records:
            manifest["build_seconds"].update(record["build_seconds"])
        mf.write_manifest(directory, manifest)
        for record in records:
            try:
                os.remove(shard_path(directory, record["shard"]))
            except FileNotFoundError:  # merged by another shard meanwhile
                pass
    return manifest


def refuse_unfinished(directory, shard, fn):
    """The shard files' records, unless shards of another count than `shard`
    (of any count for a one-process build, `shard=None`) are unfinished.

    Such a build could compute an epoch that a running shard is writing:
    that is a `ValueError` naming those shards and the way out.
    """
    manifest, records = read_progress(directory, fn)
    pending = unfinished(records, complete_epochs(manifest, records))
    other = {key: value for key, value in pending.items() if shard is None or key[1] != shard[1]}
    if other:
        now = "a one-process build" if shard is None else f"shards of {shard[1]}"
        raise ValueError(
            f"{fn}: the teacher cache at {directory!r} is being built in other shards, "
            f"and these have not finished: {describe(other)}; {now} could write the "
            f"epochs they are writing. {finish_hint(other)} Or, if none of them runs, "
            "delete their shard-*.json files (the epochs they finished are then "
            "computed again)."
        )
    return records


def start(directory, manifest, shard, epochs, batch_size, fn):
    """The progress record of `shard` (read or new), written, after
    `refuse_unfinished`."""
    records = refuse_unfinished(directory, shard, fn)
    own = [r for r in records if tuple(r["shard"]) == shard]
    record = own[0] if own else {"epochs": 0, "epochs_complete": [], "build_seconds": {}}
    record = {
        "cache": contents_digest(manifest),
        "shard": list(shard),
        "epochs": max(int(record["epochs"]), epochs),
        "epochs_complete": record["epochs_complete"],
        "build_seconds": record["build_seconds"],
        "batch_size": batch_size,
        "versions": mf.versions(),
    }
    write_record(directory, record)
    return record


def write_record(directory, record):
    atomic_files.write_json(shard_path(directory, record["shard"]), record)
