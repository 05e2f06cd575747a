"""`data:`: where the images come from (a dataset folder or the synthetic benchmark) and how they are split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from usagg.spec.jobhash import IN_HASH, NOT_IN_HASH, JobHash
from usagg.spec.models.base import MAX_SEED, Strict


class SynthSpec(Strict):
    """Settings of the built-in synthetic ultrasound benchmark (`usagg synth`)."""

    seed: Annotated[int, IN_HASH] = Field(
        0, ge=0, le=MAX_SEED, description="Generator seed: the same seed gives the same images."
    )
    image_size: Annotated[int, IN_HASH] = Field(
        128, ge=32, le=1024, description="Side of the generated square images, px."
    )
    sizes: Annotated[
        dict[str, Annotated[int, Field(ge=4, le=1_000_000)]], JobHash("per_task", default="default_size")
    ] = Field(
        default_factory=dict,
        description="Training images per synthetic task id (tasks not named get `default_size`).",
    )
    default_size: Annotated[int, JobHash("task_default")] = Field(
        120, ge=4, le=1_000_000, description="Training images of a task not named in `sizes`."
    )
    val_size: Annotated[int, IN_HASH] = Field(
        40, ge=2, le=1_000_000, description="Images per task in the generated `val` split."
    )
    out: Annotated[Path | None, NOT_IN_HASH] = Field(
        None, description="Where to write the data (default: a folder in the cache keyed by these settings)."
    )


COLOR_DESCRIPTION = (
    "Colour of the model input: auto (RGB for a task's images when some of them have colour, i.e. channels that "
    "differ; grayscale data stay one channel, broadcast to three at input, the same numbers as gray), gray "
    "(luminance, as before colour modes existed), rgb (always three channels). Part of the decode cache's key."
)


class DataSpec(Strict):
    """Where the images come from and how they are split."""

    root: Annotated[Path | None, NOT_IN_HASH] = Field(
        None, description="Dataset root in the FMC_UIA layout (train/, val/)."
    )
    synthetic: Annotated[SynthSpec | None, IN_HASH] = Field(
        None, description="Generate the synthetic benchmark instead of `root`."
    )
    test_split: Annotated[Literal["val", "train"], IN_HASH] = Field(
        "val",
        description="Where test images come from: the dataset's `val` folder, or carved from `train` "
        "(deterministic, seeded by `split_seed`, stratified by class where the type has classes, "
        "same for every paradigm).",
    )
    test_fraction: Annotated[float, JobHash("train_split")] = Field(
        0.2, gt=0, lt=1, description="Share of train held out as test when test_split=train."
    )
    selection_fraction: Annotated[float, IN_HASH] = Field(
        0.1,
        ge=0,
        le=0.5,
        description="Share of the training pool held out for model selection (0: none); at most half, so "
        "training keeps most of the data.",
    )
    split_seed: Annotated[int, IN_HASH] = Field(
        0, ge=0, le=MAX_SEED, description="Seed of the test and selection splits (not of the job)."
    )
    cache_dir: Annotated[Path | None, NOT_IN_HASH] = Field(
        None, description="Decode cache and synthetic data (default: $USAGG_CACHE or ~/.cache/usagg)."
    )
    color: Annotated[Literal["auto", "gray", "rgb"], IN_HASH] = Field("auto", description=COLOR_DESCRIPTION)
    leakage: Annotated[Literal["error", "warn", "off"], NOT_IN_HASH] = Field(
        "error",
        description="Near duplicates between train and test (val) images: a problem that blocks the run (error), "
        "a warning (warn), or not searched (off). The same file or the same decoded pixels in both splits is "
        "always an error.",
    )
    near_duplicate_threshold: Annotated[float, NOT_IN_HASH] = Field(
        0.9,
        gt=0,
        le=1,
        description="Similarity from which a test image and a training image count as near duplicates: the share "
        "of agreeing gradient signs of a 2 x 32 x 32 difference hash of the grayscale image, over the bits that "
        "show the test image's content (a clear gradient, and not the frame every image of its task shares: black "
        "surround, fan edges, overlay text). Re-encoded, resized or brightened copies of ultrasound-like frames "
        "score 0.95 and above; the nearest training frame to an unrelated frame of one scanner 0.74-0.91 "
        "(usagg/data/leakage.py).",
    )

    @model_validator(mode="before")
    @classmethod
    def _removed_keys(cls, data: Any) -> Any:
        """`num_workers` configured DataLoader workers the engine never had: said plainly, not ignored."""
        if isinstance(data, dict) and "num_workers" in data:
            raise ValueError(
                "num_workers is no longer a setting: it was never read, since batches are cut from tensors "
                "held in memory (usagg/engine/batches.py) with no DataLoader and no worker processes; delete the "
                "line (CPU parallelism is execution.threads and execution.cpu_jobs)"
            )
        return data

    @model_validator(mode="after")
    def _one_source(self) -> DataSpec:
        if (self.root is None) == (self.synthetic is None):
            raise ValueError("give exactly one of `root` (an FMC_UIA folder) or `synthetic` (generator settings)")
        return self
