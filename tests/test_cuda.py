"""The CUDA path: the step replayed as a CUDA graph trains exactly as the eager step does, and the speed
switches run on a GPU. Skipped (with the reason) where no CUDA GPU is present, as in CI."""
import pytest
import torch

from ssgan.config import replace
from ssgan.data.splits import load_split
from ssgan.training.graphs import GraphedStep
from ssgan.training.step import build_nets, train_step
from ssgan.training.fit import fit
from ssgan.nets.inference import predict_proba
from tests.test_train import tiny_cfg

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


def _run_steps(cfg, split, graphed: bool, steps: int = 8):
    """`steps` updates on fixed batches from the same init and RNG state; losses of each step, final nets."""
    cfg = replace(cfg, **{"train.device": "cuda", "train.cuda_graph": graphed})
    torch.manual_seed(0)
    nets = build_nets(cfg, split.input_shape, split.num_classes, CUDA)
    assert nets.graphed == graphed
    x = split.x_train.to(CUDA)
    batch = (x[split.labeled_idx.to(CUDA)], split.y_train[split.labeled_idx].to(CUDA), x[:10], x[10:20])
    step = lambda *b: train_step(nets, cfg, *b)  # noqa: E731
    run = GraphedStep(step) if graphed else step
    torch.cuda.manual_seed(123)
    history = [{k: v.clone() for k, v in run(*batch).items()} for _ in range(steps)]
    if graphed:
        assert run.captured, run.failure
    return history, nets


@pytest.mark.parametrize("extra", [{}, {"tricks.label_smoothing": True, "tricks.label_flip": True},
                                   {"tricks.conditional": True}, {"mode": "supervised"}, {"mode": "vat"},
                                   {"mode": "pi_model"},
                                   {"model.wn_scale": "fixed", "model.g_bn_scale": False}])  # untrained params
def test_graph_replays_train_exactly_as_the_eager_step(npz_path, extra):
    cfg = tiny_cfg(npz_path, **{"data.labels": 10, **extra})  # Gaussian noise on: the graph's RNG is eager's
    split = load_split(cfg.data)
    eager, eager_nets = _run_steps(cfg, split, graphed=False)
    graph, graph_nets = _run_steps(cfg, split, graphed=True)
    for i, (e, g) in enumerate(zip(eager, graph)):
        for k in e:
            assert torch.allclose(e[k], g[k], rtol=1e-4, atol=1e-5), f"step {i}: {k} {e[k]} vs {g[k]}"
    for net in ("D", "G"):
        if getattr(eager_nets, net) is None:
            continue
        for (name, p), q in zip(getattr(eager_nets, net).named_parameters(), getattr(graph_nets, net).parameters()):
            assert torch.allclose(p, q, rtol=1e-3, atol=1e-5), f"{net}.{name}"


@pytest.mark.parametrize("mode", ["vat", "mean_teacher", "pi_model"])
def test_the_consistency_modes_are_graphed_and_follow_their_eager_fit(npz_path, mode):
    """VAT's power iteration (autograd inside the step), the mean teacher's forward and the ramped weight (a device
    scalar set before each replay) in the CUDA graph."""
    cfg = tiny_cfg(npz_path, **{"mode": mode, "train.device": "cuda", "train.epochs": 2, "train.steps_per_epoch": 6,
                                "train.ema_decay": 0.9, f"ssl.{mode}.rampup_steps": 8})
    split = load_split(cfg.data)
    graphed = fit(cfg, split, progress=False)
    eager = fit(replace(cfg, **{"train.cuda_graph": False}), split, progress=False)
    assert graphed.cuda_graph == "on" and eager.cuda_graph == "off"
    for g, e in zip(graphed.history, eager.history):
        assert g["loss_consistency"] == pytest.approx(e["loss_consistency"], rel=1e-3)
        assert g["loss_d"] == pytest.approx(e["loss_d"], rel=1e-3)


def test_graphed_fit_follows_the_eager_fit_and_says_it_was_graphed(npz_path):
    cfg = tiny_cfg(npz_path, **{"train.device": "cuda", "train.epochs": 2, "train.steps_per_epoch": 6,
                                "train.lr_schedule": "linear_decay", "train.decay_start": 0.0})
    split = load_split(cfg.data)
    graphed = fit(cfg, split, progress=False)  # cuda_graph: null = on for this config on a GPU
    eager = fit(replace(cfg, **{"train.cuda_graph": False}), split, progress=False)
    assert graphed.cuda_graph == "on" and eager.cuda_graph == "off"
    for g, e in zip(graphed.history, eager.history):
        assert g["lr"] == pytest.approx(e["lr"])  # the schedule reaches the captured Adam
        assert g["loss_d"] == pytest.approx(e["loss_d"], rel=1e-3)


@pytest.mark.parametrize("switch", [{"train.precision": "bf16"},
                                    {"train.precision": "bf16", "model.arch": "conv", "model.conv_width": 4},
                                    {"train.compile": True}, {"train.precision": "tf32"}],
                         ids=["bf16", "conv-bf16", "compile", "tf32"])
def test_speed_switches_train_on_a_gpu(npz_path, switch):
    cfg = tiny_cfg(npz_path, **{"train.device": "cuda", "train.epochs": 2, **switch})
    split = load_split(cfg.data)
    result = fit(cfg, split, progress=False)
    assert result.stop_reason == "completed" and len(result.history) == 2
    assert all(torch.isfinite(torch.tensor(v)) for v in result.history[-1].values())
    probs = predict_proba(result.classifier, split.x_test, split.num_classes)
    assert torch.allclose(probs.sum(1), torch.ones(len(probs)))
    assert result.cuda_graph == ("off" if cfg.train.compile else "on")


def test_generator_pass_is_fused_by_default_on_a_gpu(npz_path):
    nets = build_nets(tiny_cfg(npz_path, **{"train.device": "cuda"}), (1, 8, 8), 3, CUDA)
    assert nets.fused and nets.fused_g  # one forward of D for G's feature matching: fewer kernels


def test_stacked_seeds_replay_as_a_graph_exactly_as_eager_steps(npz_path):
    from ssgan.training.seeds import stack_nets
    from ssgan.training.seeds import train_step as seeds_train_step

    cfg = tiny_cfg(npz_path, **{"data.labels": 10, "train.device": "cuda"})  # Gaussian noise on
    split = load_split(cfg.data)
    x = split.x_train.to(CUDA)
    lb = split.labeled_idx.to(CUDA)
    batch = (torch.stack([x[lb]] * 3), torch.stack([split.y_train[split.labeled_idx].to(CUDA)] * 3),
             torch.stack([x[:10], x[10:20], x[20:30]]), torch.stack([x[30:40], x[40:50], x[50:60]]))
    runs = {}
    for graphed in (False, True):
        c = replace(cfg, **{"train.cuda_graph": graphed})
        per_seed = []
        for s in range(3):
            torch.manual_seed(s)
            per_seed.append(build_nets(c, split.input_shape, split.num_classes, CUDA))
        nets = stack_nets(c, per_seed)
        step = lambda *b: seeds_train_step(nets, c, *b)  # noqa: E731
        run = GraphedStep(step) if graphed else step
        torch.cuda.manual_seed(123)
        runs[graphed] = ([{k: v.clone() for k, v in run(*batch).items()} for _ in range(8)], nets)
        if graphed:
            assert run.captured, run.failure
    (eager, e_nets), (graph, g_nets) = runs[False], runs[True]
    for i, (e, g) in enumerate(zip(eager, graph)):
        for k in e:
            assert e[k].shape == (3,) and torch.allclose(e[k], g[k], rtol=1e-4, atol=1e-5), f"step {i}: {k}"
    for p, q in zip(e_nets.D.parameters(), g_nets.D.parameters()):
        assert torch.allclose(p, q, rtol=1e-3, atol=1e-5)


def test_fit_seeds_is_graphed_on_a_gpu(npz_path):
    from ssgan.training.seeds import fit_seeds

    cfg = tiny_cfg(npz_path, **{"train.device": "cuda", "train.epochs": 2})
    splits = [load_split(replace(cfg, **{"data.split_seed": s}).data) for s in (0, 1, 2)]
    result = fit_seeds(cfg, splits, [0, 1, 2], progress=False)
    assert result.cuda_graph == "on" and result.stop_reason == "completed"
    assert all(len(h) == 2 and all(torch.isfinite(torch.tensor(v)) for v in h[-1].values()) for h in result.histories)


def test_a_failing_seed_is_stopped_alone_inside_a_cuda_graph(npz_path):
    from ssgan.training.seeds import fit_seeds
    from tests.test_seeds import _failing

    cfg = tiny_cfg(npz_path, **{"train.device": "cuda", "train.epochs": 2})
    splits = [load_split(replace(cfg, **{"data.split_seed": s}).data) for s in (0, 1)]
    result = fit_seeds(cfg, [splits[0], _failing(splits[1])], [0, 1], progress=False)
    assert result.cuda_graph == "on" and result.stop_reasons == ["completed", "non_finite_loss"]
    assert [len(h) for h in result.histories] == [2, 0]
    assert all(torch.isfinite(p).all() for clf in result.classifiers for p in clf.parameters())


@pytest.mark.parametrize("graphed", [False, True])
def test_a_resumed_cuda_run_ends_as_the_uninterrupted_run(npz_path, graphed):
    from tests.test_resume import STATEFUL, _stop_after, _without_times

    cfg = tiny_cfg(npz_path, **{**STATEFUL, "train.device": "cuda", "train.cuda_graph": graphed})
    split = load_split(cfg.data)
    whole = fit(cfg, split, progress=False)
    saved = []
    fit(cfg, split, progress=False, on_epoch=_stop_after(2), on_state=saved.append)
    rest = fit(cfg, split, progress=False, resume=saved[-1])
    assert _without_times(rest.history) == _without_times(whole.history)
    for p, q in zip(whole.classifier.state_dict().values(), rest.classifier.state_dict().values()):
        assert torch.equal(p, q)
