"""Convert torchvision's ImageNet weights (resnet18, resnet50, mobilenet_v2) to the safetensors file trd loads
(once, before any job):

  python launch/convert_weights.py resnet18 resnet18-f37072fd.pth public/resnet18_imagenet.safetensors

The .pth file is read with torch.load(weights_only=True); trd's jobs only ever read the safetensors file, e.g. as
the public pretrained model of a Renofeation experiment (public_model.path).
"""
from __future__ import annotations

import argparse
import sys

import torch

from trd.models import save_model
from trd.models.torchvision_weights import CONVERTIBLE, from_torchvision


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=CONVERTIBLE)
    parser.add_argument("weights", help="torchvision's .pth state dict")
    parser.add_argument("out", help="the .safetensors file to write")
    args = parser.parse_args(argv)
    try:
        state = torch.load(args.weights, map_location="cpu", weights_only=True)
        model = from_torchvision(args.model, state)
    except (OSError, RuntimeError, ValueError) as err:
        print(f"convert_weights: {args.weights}: {str(err).splitlines()[0]}", file=sys.stderr)
        return 1
    save_model(model, args.out)
    print(f"convert_weights: wrote {args.out} ({args.model}, 1000 classes, 224 px)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
