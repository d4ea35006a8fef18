"""Per-target statistics and pictures of DenseSIRST (or any dataset with the same columns).

``bafenet data stats --dataset DIR_OR_REPO --out DIR`` measures every target of a built dataset folder, a Hub
dataset or a SIRSTdevkit folder and writes ``summary.json``, ``targets.csv`` (one row per target), ``images.csv``
(one row per image), six plots (``sizes.png``, ``contrast_cdf.png``, ``brightness_rank.png``,
``cluster_distance.png``, ``per_image.png``, ``examples.png``) and ``README.md`` (the Markdown the dataset card
embeds). The dataset builder calls :func:`write_card_stats` so that its card shows the same numbers and plots.

Definitions (original image pixels; boxes are xyxy, 0-based, exclusive max, as in the DenseSIRST XML):

* **size**: box width x height ``w x h`` (the XML's ``xmax - xmin`` and ``ymax - ymin``); ``box_area = w * h``;
  ``mask_area`` = target-mask pixels inside the box, i.e. the area of the target's mask component (the two are
  the same for the 99.8 % of DenseSIRST boxes that equal their component).
* **target pixels**: the target-mask pixels inside the box (all box pixels if the box holds no mask pixel).
* **local contrast** (``local_contrast``): mean grey value of the target pixels / mean grey value of a background
  ring: the pixels ``gap + 1 .. gap + width`` px (Chebyshev distance, default 2..4 px) beyond the box, clipped to
  the image, **excluding every target's pixels** (masks and boxes). The 1-px gap keeps the target's blurred rim
  out of the background; excluding the other targets keeps a dense cluster from raising its own background, the
  bias the DenseSIRST README itself points out. A ratio (not a difference) is comparable across images of
  different gain; 1 means "as bright as the surroundings".
* ``local_contrast_with_neighbours``: the same ring with the neighbouring targets' pixels left in.
* ``local_contrast_cells``: mean of the target pixels / the largest mean of the 8 box-sized cells that surround
  the box (the cell layout of the local contrast measure, LCM, of Chen et al. 2014; neighbours included). This is
  our best guess at the README's definition: it is the one that reproduces "90 % below 2" on the real data.
* **brightness rank**: ``1 +`` the number of image pixels strictly brighter than the target's brightest pixel
  (grey values; RGB converted to luminance). Rank 1 = the target holds the image's maximum grey value (ties
  count): it *is* the brightest point. ``background_brighter`` counts only non-target pixels strictly brighter
  than the target's peak: the false alarms a global threshold at that peak would give.
* **nearest-target distance**: Euclidean distance (px) from the box centre to the nearest other box centre of the
  same image (empty for a single-target image).
* **sky fraction**: sky-mask pixels / image pixels; a target's ``sky_overlap`` = share of its pixels in sky.

One file per job: ``measure.py`` (one image: the definitions above), ``sources.py`` (reading built datasets and
devkits), ``summary.py`` (a whole dataset: `DatasetStats`, the README's claims, CSV/JSON/card output), ``plots.py``
(the six plots); ``bafenet data stats`` is `bafenet.commands.data_stats`.
"""

from __future__ import annotations

from .measure import RING_GAP, RING_WIDTH, TARGET_COLUMNS, ImageAnnotations, StatsError, measure_image
from .sources import iter_dataset, iter_devkit, load_source
from .summary import CARD_COMMAND, IMAGE_COLUMNS, README_CLAIMS, DatasetStats, compute_target_stats, write_card_stats

__all__ = [
    "ImageAnnotations",
    "DatasetStats",
    "StatsError",
    "measure_image",
    "compute_target_stats",
    "write_card_stats",
    "iter_dataset",
    "iter_devkit",
    "load_source",
]
