#!/usr/bin/env python
"""Write WebDataset shards for trd from raw datasets or trd's embedded generated data.

  python launch/make_shards.py cifar100 --root /data/raw --out /data/c100 --maxcount 1000
  python launch/make_shards.py imagefolder --root /data/raw/tiny-imagenet-200 --tinyimagenet --out /data/tin
  python launch/make_shards.py --dataset embedded --name synth_source --out data/synth_source

Prints the role node (shard patterns, num_classes) to paste into a data config.
"""

from __future__ import annotations

import argparse
import os
import sys

from trd.data.embedded import EMBEDDED
from trd.data.errors import DataError
from trd.data.sources import DATASETS, make_shards, role_snippet


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", nargs="?", choices=DATASETS, help="source format")
    parser.add_argument("--dataset", dest="dataset_option", choices=DATASETS, help="same as the positional argument")
    parser.add_argument("--root", help="folder holding the raw files (e.g. the one containing cifar-10-batches-py/)")
    parser.add_argument("--out", required=True, help="folder to write <split>-NNNNNN.tar shards and meta.json into")
    parser.add_argument("--maxcount", type=int, default=1000, help="samples per shard (default 1000)")
    parser.add_argument("--shuffle-seed", type=int, default=0, help="seed of the one-off shuffle of the train split's order")
    parser.add_argument("--no-shuffle", action="store_true", help="keep the source's train order")
    parser.add_argument("--name", choices=sorted(EMBEDDED), help="embedded dataset to generate (with --dataset embedded)")
    parser.add_argument("--image-size", type=int, default=32, help="image size of generated data and of the printed role node")
    parser.add_argument("--tinyimagenet", action="store_true", help="imagefolder root is TinyImageNet (val/val_annotations.txt is required)")
    args = parser.parse_args(argv)
    args.dataset = args.dataset or args.dataset_option
    if args.dataset is None:
        parser.error(f"name a dataset: one of {', '.join(DATASETS)}")
    if args.dataset_option and args.dataset_option != args.dataset:
        parser.error(f"dataset given twice: {args.dataset} and --dataset {args.dataset_option}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.tinyimagenet and not os.path.isfile(os.path.join(args.root or "", "val", "val_annotations.txt")):
            raise DataError(f"--tinyimagenet: {args.root}/val/val_annotations.txt is missing: point --root at the extracted tiny-imagenet-200 folder")
        result = make_shards(args.dataset, out=args.out, root=args.root, maxcount=args.maxcount,
                             shuffle_seed=None if args.no_shuffle else args.shuffle_seed, name=args.name,
                             image_size=args.image_size)
    except DataError as exc:
        print(f"make_shards: error: {exc}", file=sys.stderr)
        return 2
    for split, info in result["splits"].items():
        print(f"wrote {info['samples']} {split} samples in {info['shards']} shards: {info['pattern']}")
        if info["stale"]:
            print(f"warning: {len(info['stale'])} older {split} shards in {args.out} are not part of this pattern "
                  f"(first: {info['stale'][0]}); delete them to avoid confusion", file=sys.stderr)
    print("\n# role node for the data config:")
    print(role_snippet(result, args.image_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
