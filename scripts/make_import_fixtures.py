"""Make the forward-equivalence fixtures of `lipctl import --from-pytorch` (tests/import.rs).

How the fixtures in tests/fixtures/import/ were produced (run once, by hand; the authors' code is
not part of lipctl and is not needed to run the tests):

    git clone https://github.com/berndprach/1LipschitzLayersCompared /tmp/authors   # commit 01e3f2a
    pip install --target /tmp/authors-py einops numpy
    PYTHONPATH=/tmp/authors-py:/tmp/authors .venv/bin/python scripts/make_import_fixtures.py \
        tests/fixtures/import

(torch 2.11.0 on the CPU, the version `make build` installs.) For each of the eight methods this
builds the authors' ConvNetXS exactly as their 24-hour training runs did (`models.simplified_conv_net.
SimplifiedConvNet` with `MaxMin`, the run's conv class; AOL: `AOLConv2dOrth` first/head and
`AOLConv2dDirac` blocks; head `CayleyLinear` for Cayley and `lipnn`'s `BjorckLinear` for BCOP, as
in their dumped_setting.yml), 10 classes, seed 1000 + method index; then

1. one training forward (creates the lazily built state: Cayley's `alpha`, CPL's `u`);
2. three SGD steps (lr 0.05, momentum 0.9) on a random batch of 8 images and labels, then every
   trainable tensor gets Gaussian noise of 5 % of its mean absolute value, so no layer is at
   its initialisation (identity/Dirac kernels, orthogonal matrices); finally every trainable
   tensor is rounded to the nearest bfloat16 value (still stored as float32: both sides compute
   in float32 from the same values; the rounding only lets gzip halve the fixture);
3. `torch.save(model.state_dict(), METHOD.pth)`, committed gzip-compressed as `METHOD.pth.gz`
   (the test decompresses it and imports the `.pth` through the real CLI);
4. a second model of the same class with another seed gets one training forward (so the lazy
   state exists), then `load_state_dict(..., strict=True)` of that file, BCOP's stale kernel is
   dropped (`weight = None`), `eval()`; under `torch.manual_seed(0)` and no_grad it runs the
   inputs; forward hooks record every convolution's output (and the head's).

With `--hub` (`... make_import_fixtures.py --hub DIR`) the networks are those of the `torch.hub`
entry points instead (`lipnn.cifar10_lipnetXS_<layer>(pretrained=False)`: seven methods, no
Standard; AOL's `AOLConv2d` everywhere), and the reference model is loaded as a hub user loads a
release file: `load_state_dict` right after construction, with no forward first (the hub's own
hooks create Cayley's `alpha` and CPL's `u`; the Cayley hook raises a TypeError in every torch,
`nn.Parameter(t, device=...)`, and its pop makes strict loading report `alpha` missing, so the
script mends that hook). These are not committed; run
`LIPCTL_IMPORT_FIXTURES=DIR cargo test --release --test import imported_models` to check them.

`METHOD.ref.safetensors` holds `input [3, 3, 32, 32]` (uniform in [-0.5, 0.5], seed 7),
`logits [3, 10]`, and `layer.NAME`, the output for the first image of each convolution in
lipctl's names (`first_conv`, `block{i}.conv{j}`, `head`; the head flattened to `[1, 512]`).
"""

import gzip
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_state_dict import write_safetensors  # noqa: E402

from models import layers  # noqa: E402  (the authors' code, from PYTHONPATH)
from models.simplified_conv_net import DEFAULT_MODELS, SimplifiedConvNet  # noqa: E402

METHODS = ["Standard", "AOL", "BCOP", "CPL", "Cayley", "LOT", "SLL", "SOC"]


def build(method, seed):
    kwargs = dict(DEFAULT_MODELS["ConvNetXS"], get_activation=layers.MaxMin, nrof_classes=10, seed=seed)
    if method == "AOL":
        kwargs.update(get_conv=layers.AOLConv2dDirac, get_conv_first=layers.AOLConv2dOrth,
                      get_conv_head=layers.AOLConv2dOrth)
    elif method == "BCOP":
        from lipnn.layers import BjorckLinear  # the head named in the authors' BCOP runs
        kwargs.update(get_conv=layers.BCOP, get_linear=BjorckLinear)
    elif method == "Cayley":
        kwargs.update(get_conv=layers.CayleyConv, get_linear=layers.CayleyLinear)
    else:
        name = {"Standard": "StandardConv2d", "CPL": "CPLConv2d", "LOT": "LOT", "SLL": "SLLConv2d",
                "SOC": "SOC"}[method]
        kwargs.update(get_conv=getattr(layers, name))
    return SimplifiedConvNet(**kwargs)


def perturb(model, seed):
    g = torch.Generator().manual_seed(seed)
    model.train()
    model(torch.rand(8, 3, 32, 32, generator=g) - 0.5)  # lazy state (alpha, u)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    x = torch.rand(8, 3, 32, 32, generator=g) - 0.5
    y = torch.randint(0, 10, (8,), generator=g)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * p.abs().mean() * torch.randn(p.shape, generator=g))
                p.copy_(p.to(torch.bfloat16).to(torch.float32))


def conv_modules(model):
    """(lipctl name, module) of every convolution and of the head, in forward order."""
    named = dict(model.named_modules())
    out = [("first_conv", named["FirstConv"])]
    for i in range(1, 6):
        out += [(f"block{i}.conv{j + 1}", named[f"Block{i}.{2 * j}"]) for j in range(5)]
    head = named.get("ClassificationHead.0")
    if isinstance(head, torch.nn.Flatten):
        head = named["ClassificationHead.1"]
    return out + [("head", head)]


def recorded(model, x):
    """The reference tensors of a loaded model in eval mode: the inputs, their logits (under
    `torch.manual_seed(0)`, no_grad) and every convolution's output for the first input."""
    outputs = {}
    for name, m in conv_modules(model):
        m.register_forward_hook(lambda _m, _i, o, name=name: outputs.__setitem__(f"layer.{name}", (o.flatten(1) if name == "head" else o)[:1].detach().clone()))
    torch.manual_seed(0)
    with torch.no_grad():
        logits = model(x)
    return {"input": x, "logits": logits, **outputs}


def reference(method, path, x):
    model = build(method, seed=1)
    model.train()
    model(torch.zeros(1, 3, 32, 32))  # the lazy state exists, so strict loading can fill it
    model.load_state_dict(torch.load(path, weights_only=True), strict=True)
    for m in model.modules():
        if isinstance(m, layers.BCOP):
            m.weight = None  # the kernel of the throwaway forward above, not of the loaded weights
    model.eval()
    return recorded(model, x)


# The `torch.hub` entry points (`lipnn`, hubconf.py): seven methods, no Standard.
HUB_LAYERS = {"AOL": "aol", "BCOP": "bcop", "CPL": "cpl", "Cayley": "cayley", "LOT": "lot", "SLL": "sll",
              "SOC": "soc"}


def build_hub(method, seed):
    import lipnn  # the authors' hub package, from PYTHONPATH
    torch.manual_seed(seed)
    return getattr(lipnn, f"cifar10_lipnetXS_{HUB_LAYERS[method]}")(pretrained=False)


def _mend_hub_cayley_hook():
    """The hub's `CayleyConv._load_from_state_dict` calls `nn.Parameter(t, device=...)`, which no
    torch accepts (TypeError), and pops `alpha` before the strict loader looks for it (which then
    reports it missing), so no hub Cayley model loads a state dict. Mended: the hook registers
    `alpha` with the file's shape and leaves the loading to the loader."""
    from lipnn.layers.lipschitz import cayley

    def load(self, state_dict, prefix, *args):
        if prefix + "alpha" in state_dict:
            self.alpha = torch.nn.Parameter(state_dict[prefix + "alpha"].clone().to(self.weight.device))
        return torch.nn.Conv2d._load_from_state_dict(self, state_dict, prefix, *args)

    cayley.CayleyConv._load_from_state_dict = load


def reference_hub(method, path, x):
    """As a hub user loads a release file: a fresh model, `load_state_dict` at once (the hub's
    own hooks create Cayley's alpha and CPL's u), `eval()`."""
    if method == "Cayley":
        _mend_hub_cayley_hook()
    model = build_hub(method, seed=1)
    model.load_state_dict(torch.load(path, weights_only=True), strict=True)
    model.eval()
    return recorded(model, x)


def main(out_dir, hub=False):
    """`hub`: the networks of the `torch.hub` entry points instead of the training runs' (not
    committed; `LIPCTL_IMPORT_FIXTURES=DIR cargo test --test import` checks them)."""
    os.makedirs(out_dir, exist_ok=True)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(7)) - 0.5
    for index, method in enumerate(METHODS):
        if hub and method not in HUB_LAYERS:
            continue
        model = (build_hub if hub else build)(method, seed=1000 + index)
        perturb(model, seed=2000 + index)
        path = os.path.join(out_dir, f"{method}.pth")
        torch.save(model.state_dict(), path)
        refs = (reference_hub if hub else reference)(method, path, x)
        write_safetensors(os.path.join(out_dir, f"{method}.ref.safetensors"), refs)
        with open(path, "rb") as f, open(path + ".gz", "wb") as g:
            g.write(gzip.compress(f.read(), compresslevel=9, mtime=0))
        os.remove(path)
        print(f"{method}: {len(model.state_dict())} tensors, logits {refs['logits'][0, :3].tolist()}")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--hub"]
    main(args[0] if args else "tests/fixtures/import", hub="--hub" in sys.argv[1:])
