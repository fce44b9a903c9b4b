"""Feature distillation between two architectures: each distilled block of the teacher is paired with the
student's last block of the same resolution, and a 1x1 convolution maps that block's output to the teacher's
width where the widths differ. The convolutions train with the student and are never released."""
from __future__ import annotations

import torch
from torch import nn


def block_output_shapes(model, image_size: int) -> dict[str, tuple[int, ...]]:
    """Each block's output shape (without the batch) on one image, computed on the CPU."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        _, taps = model.forward_with_taps(torch.zeros(1, 3, image_size, image_size), model.block_names)
    model.train(was_training)
    return {name: tuple(tap.shape[1:]) for name, tap in taps.items()}


def last_block_per_resolution(shapes: dict[str, tuple[int, ...]]) -> list[str]:
    """The blocks whose successor has another resolution (and the last block): where a stage of the network ends."""
    names = list(shapes)
    return [name for name, after in zip(names, names[1:] + [None]) if after is None
            or shapes[name][1:] != shapes[after][1:]]


def pair_blocks(student, teacher, teacher_blocks: list[str] | None, image_size: int) -> list[list[str]]:
    """[[student block, teacher block], ...]: every teacher block (null: the last block of each of the teacher's
    resolutions) with the student's last block of the same resolution. ValueError, in one line, when the outputs
    are not feature maps or the student has no block at a teacher block's resolution."""
    student_shapes, teacher_shapes = block_output_shapes(student, image_size), block_output_shapes(teacher, image_size)
    for model, shapes in ((student, student_shapes), (teacher, teacher_shapes)):
        flat = [name for name, shape in shapes.items() if len(shape) != 3]
        if flat:
            raise ValueError(f"{model.name}'s block {flat[0]} gives {shapes[flat[0]]}, not a (channels, height, "
                             f"width) feature map: feature matching needs convolutional blocks")
    pairs = []
    for block in teacher_blocks or last_block_per_resolution(teacher_shapes):
        size = teacher_shapes[block][1:]
        same = [name for name, shape in student_shapes.items() if shape[1:] == size]
        if not same:
            sizes = sorted({shape[1:] for shape in student_shapes.values()}, reverse=True)
            raise ValueError(f"{teacher.name}'s block {block} is {size[0]}x{size[1]}; {student.name} has no block of "
                             f"that size (its sizes: {', '.join(f'{h}x{w}' for h, w in sizes)}): distil other blocks")
        pairs.append([same[-1], block])
    return pairs


class FeatureMatching(nn.Module):
    """Maps the student's taps {student block: output} to {teacher block: output at the teacher's width}."""

    def __init__(self, pairs: list[list[str]], widths: list[tuple[int, int]]):
        super().__init__()
        self.pairs = [tuple(pair) for pair in pairs]
        self.convs = nn.ModuleList(nn.Conv2d(student, teacher, 1, bias=False) if student != teacher
                                   else nn.Identity() for student, teacher in widths)

    @classmethod
    def between(cls, student, teacher, pairs: list[list[str]], image_size: int) -> FeatureMatching:
        student_shapes = block_output_shapes(student, image_size)
        teacher_shapes = block_output_shapes(teacher, image_size)
        return cls(pairs, [(student_shapes[s][0], teacher_shapes[t][0]) for s, t in pairs])

    def forward(self, student_taps: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {teacher: conv(student_taps[student]) for (student, teacher), conv in zip(self.pairs, self.convs)}


class StudentWithMatching(nn.Module):
    """The student and its matching convolutions, one module for the engine; the forward is the student's."""

    def __init__(self, model: nn.Module, matching: FeatureMatching):
        super().__init__()
        self.model = model
        self.matching = matching

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
