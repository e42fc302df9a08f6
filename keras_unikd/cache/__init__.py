"""Teacher-output cache: the frozen teacher's outputs for every keyed view, on disk.

The teacher is frozen, yet an online Distiller recomputes its forward pass
at every step. With keyed augmentation (`keras_unikd.data.keyed`) the view
of example `i` in epoch `e` is a pure function of `(seed, e, i)`, so the
teacher's outputs for it can be computed once and read back by `(epoch,
index)`. What is stored is what the terms read of the teacher, as they
declare it (`DistillationTerm.teacher_needs`): the logits, and the tapped
features that a term reads only pooled, on one view or both.

- `build_teacher_cache` (`build.py`) runs the teacher over the keyed views
  for N epochs and writes one `.npy` file per epoch, view and output
  (float32 or float16), described by the manifest's `ArraySpec`s
  (`manifest.py`):

      <directory>/manifest.json             what the cache was built from,
                                            what it holds, which epochs are
                                            complete
      <directory>/epoch_0000/weak.logits.npy     (N, num_classes)
      <directory>/epoch_0000/weak.pooled_0.npy   (N, channels of feature 0)
      <directory>/epoch_0000/strong.logits.npy   (two-view caches)

  An epoch is recorded complete only once all its files are written and
  flushed, so an interrupted build resumes at the first incomplete epoch,
  and a longer build extends a shorter cache.
- `open_teacher_cache` (`store.py`) checks a cache against the training
  that wants it (the teacher's weights, the data, the augmentation, the
  seed, the views and outputs the terms need, the epochs, the files' sizes)
  and raises a `ValueError` that names the difference and the fix;
  `TeacherCache.lookup` returns the outputs of a batch of `(epoch, index)`
  keys, and `TeacherCache.teacher_source()` the `CachedTeacher` that a
  Distiller trains from instead of the teacher model.
- `cached_teacher_pipeline` (`pipeline.py`) yields the training batches with
  those outputs attached, `({"inputs": views, "cached_teacher": outputs},
  labels)`.

Example:

```python
from keras_unikd import Distiller, terms
from keras_unikd.cache import build_teacher_cache, cached_teacher_pipeline
from keras_unikd.data import cifar100_keyed_augmentation

distillation = [terms.CrossEntropy(), terms.DKD(), terms.UniKDFeatures(...)]
cache = build_teacher_cache("cache/", teacher, distillation, images, labels, seed=0,
                            epochs=240, augmentation=cifar100_keyed_augmentation())
distiller = Distiller(cache.teacher_source(), student, terms=distillation)
distiller.compile(optimizer="sgd")
distiller.fit(cached_teacher_pipeline(cache, images, labels, 64), epochs=240,
              steps_per_epoch=keyed_steps_per_epoch(len(images), 64))
```
"""

from keras_unikd.cache.build import build_teacher_cache
from keras_unikd.cache.manifest import DTYPES
from keras_unikd.cache.manifest import ArraySpec
from keras_unikd.cache.manifest import dataset_fingerprint
from keras_unikd.cache.manifest import teacher_fingerprint
from keras_unikd.cache.pipeline import cached_teacher_pipeline
from keras_unikd.cache.store import TeacherCache
from keras_unikd.cache.store import open_teacher_cache
from keras_unikd.teacher_source import CACHED_TEACHER
from keras_unikd.teacher_source import INPUTS
from keras_unikd.teacher_source import CachedTeacher
from keras_unikd.teacher_source import carried_outputs
