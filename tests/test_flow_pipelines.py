"""SD3 and Flux folders through pgraft's loop, on tiny random pipelines built from configs (CPU, offline): the
deterministic sampler against the stock pipeline, the base view exact beside a trained adapter, training
above the cutoff with the flow targets, LoRA rounds a stock pipeline reloads, a reward that rises, and P-GRAFT
on its stochastic sampler by default."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch

from pgraft.core.sampling import sample, sample_seeds, seeded_noise
from pgraft.families.random_pipelines import build_pipeline
from pgraft.graft.config import RunConfig
from pgraft.graft.runner import RoundRunner, run_to_end
from pgraft.registry import load_model

PROMPTS = ["a red square", "a blue circle"]
SIZE = {"height": 16, "width": 16}  # Flux's default is 128 latent patches a side; the tests draw 16 px


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("flow-pipelines")
    return {kind: build_pipeline(kind, root / kind) for kind in ("sd3", "flux")}


def _load(folders, kind, **options):
    return load_model(str(folders[kind]), **SIZE, **options)


def _stock(folder, kind):
    from diffusers import FluxPipeline, StableDiffusion3Pipeline

    if kind == "sd3":
        pipe = StableDiffusion3Pipeline.from_pretrained(str(folder), text_encoder_3=None, tokenizer_3=None)
    else:
        pipe = FluxPipeline.from_pretrained(str(folder))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _stock_latents(pipe, kind, prompts, init, steps, guidance, **extra):
    """The stock pipeline's final latents from `init` (unpacked, as pgraft stores them), on pgraft's grid."""
    sigmas = np.linspace(1.0, 1 / steps, steps).tolist()
    latents = init.clone()
    if kind == "flux":
        n, c, h, w = init.shape
        latents = pipe._pack_latents(latents, n, c, h, w)
    out = pipe(
        prompts, latents=latents, num_inference_steps=steps, sigmas=sigmas, guidance_scale=guidance,
        output_type="latent", **SIZE, **extra,
    ).images  # fmt: skip
    return pipe._unpack_latents(out, SIZE["height"], SIZE["width"], pipe.vae_scale_factor) if kind == "flux" else out


@pytest.mark.parametrize("kind", ["sd3", "flux"])
def test_at_eta_0_pgrafts_loop_reproduces_the_stock_pipeline(folders, kind):
    """Euler on the explicit-sigma grid (with Flux's dynamic shift at the image's `mu`) is the stock
    pipeline's own sampler: same prompts, same initial latents, same final latents."""
    model = _load(folders, kind, guidance_scale=4.0)
    assert model.process.kind == "flow" and model.guided == (kind == "sd3")  # Flux: an embedding, one call
    seeds = sample_seeds(0, 1, len(PROMPTS))
    ours = sample(model, seeds, 8, eta=0.0, cond=model.encode(PROMPTS)).samples
    init = seeded_noise(seeds, model.sample_shape, 1)[:, 0]
    theirs = _stock_latents(_stock(folders[kind], kind), kind, PROMPTS, init, 8, 4.0)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    assert (ours - init).abs().max() > 0.1  # the transformer did move them


def test_flux_true_cfg_is_used_only_with_a_negative_prompt_and_matches_the_pipeline(folders):
    plain = _load(folders, "flux", true_cfg_scale=3.0)
    assert not plain.guided  # no negative prompt: one call, the guidance embedding only
    model = _load(folders, "flux", true_cfg_scale=3.0, negative_prompt="blurry")
    assert model.guided
    seeds = sample_seeds(0, 1, 2)
    ours = sample(model, seeds, 6, eta=0.0, cond=model.encode(PROMPTS)).samples
    init = seeded_noise(seeds, model.sample_shape, 1)[:, 0]
    theirs = _stock_latents(
        _stock(folders["flux"], "flux"), "flux", PROMPTS, init, 6, 3.5, true_cfg_scale=3.0, negative_prompt="blurry"
    )
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)  # one doubled batch against two calls


@pytest.mark.parametrize("kind", ["sd3", "flux"])
def test_the_base_view_is_the_base_transformer_exactly_with_a_trained_adapter_beside_it(folders, kind):
    model = _load(folders, kind, guidance_scale=1.0 if kind == "sd3" else 3.5)
    pristine = _load(folders, kind, guidance_scale=1.0 if kind == "sd3" else 3.5)  # another copy, never adapted
    tuned = model.trainable_copy(seed=0)
    with torch.no_grad():
        for p in tuned.trainable_parameters():
            p.add_(0.1 * torch.randn_like(p))
    tuned.frozen()
    cond = model.encode(PROMPTS)
    x, t = torch.randn(2, *model.sample_shape), torch.tensor([900.0, 300.0])
    with torch.no_grad():
        reference = pristine(x, t, cond)
        assert torch.equal(model(x, t, cond), reference)
        assert (tuned(x, t, cond) - reference).abs().max() > 1e-3
        sample(model, sample_seeds(0, 3, 2), 6, eta=1.0, finetuned=tuned, cutoff=0.5, cond=cond)
        assert torch.equal(model(x, t, cond), reference)  # still exact after the stitched sampler switched
    assert copy.copy(model).lora is None


@pytest.mark.parametrize("kind", ["sd3", "flux"])
def test_a_rounds_lora_loads_into_a_stock_pipeline_and_reproduces_its_samples(folders, kind, tmp_path):
    out = tmp_path / "run"
    config = RunConfig(
        model=str(folders[kind]), prompts=PROMPTS[:1], samples=4, preview=0, num_inference_steps=6,
        finetune_steps=15, batch_size=4, lr=1e-2, rounds=1, sampler="ddim", eta=0.0, guidance_scale=3.0,
        lora_rank=4, lora_alpha=8.0, **SIZE,
    )  # fmt: skip
    run_to_end(RoundRunner(config, out=out))
    round_dir = out / "rounds" / "round_001"
    assert (round_dir / "pytorch_lora_weights.safetensors").is_file()
    from safetensors.torch import load_file

    ours = load_file(str(round_dir / "samples.safetensors"))["samples"]
    base = load_file(str(out / "rounds" / "round_000" / "samples.safetensors"))["samples"]
    init = seeded_noise(sample_seeds(config.seed, 2 * 1000, 4), tuple(ours.shape[1:]), 1)[:, 0]
    pipe = _stock(folders[kind], kind)
    pipe.load_lora_weights(str(round_dir))
    theirs = _stock_latents(pipe, kind, PROMPTS[:1] * 4, init, 6, 3.0)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    assert (ours - base).abs().max() > 1e-2  # and fine-tuning did change the samples


@pytest.mark.parametrize("kind", ["sd3", "flux"])
def test_pgraft_trains_only_above_the_cutoff_with_the_flow_kernels_velocity(folders, kind):
    from pgraft.core.finetune import FinetuneData, finetune_iter, training_example

    model = _load(folders, kind, guidance_scale=1.0 if kind == "sd3" else 3.5)
    seen: list[torch.Tensor] = []
    hook = model.denoiser.register_forward_pre_hook(
        lambda m, args, kw: seen.append(kw["timestep"].detach().clone()), with_kwargs=True
    )
    try:
        tuned = model.trainable_copy(seed=1)
        cut = 400.0
        cond = model.encode(PROMPTS[:1])
        data = FinetuneData(torch.randn(6, *model.sample_shape), cond[torch.zeros(6, dtype=torch.long)], cut, cut)
        for _ in finetune_iter(tuned, data, steps=6, batch_size=3, lr=1e-3, seed=0):
            pass
    finally:
        hook.remove()
    steps = torch.cat(seen) * (1000 if kind == "flux" else 1)  # Flux's transformer takes t / 1000
    assert steps.min() > cut and steps.max() <= 1000 + 1e-3
    # the velocity target: ε − x_0 at t_c = 0, and scaleout §2.3's kernel velocity above a cutoff
    x_c, noise = torch.randn(4, *model.sample_shape), torch.randn(4, *model.sample_shape)
    t = torch.tensor([450.0, 600.0, 800.0, 990.0])
    _, target, _ = training_example(model.process, x_c, t, noise, None)
    torch.testing.assert_close(target, noise - x_c)
    x_t, target, _ = training_example(model.process, x_c, t, noise, cut)
    s_t, s_c = (t / 1000).view(-1, 1, 1, 1), cut / 1000
    a = (1 - s_t) / (1 - s_c)
    b = (s_t**2 - a**2 * s_c**2).sqrt()
    torch.testing.assert_close(x_t, a * x_c + b * noise)
    expected = (s_t * noise / b - x_t) / (1 - s_t)
    torch.testing.assert_close(target, expected, rtol=1e-4, atol=1e-4)


def test_pgraft_on_a_flow_samples_stochastically_below_the_cutoff_by_default(folders):
    """Two rounds from the same state at the cutoff end apart with η = 1 (the default), together with η = 0."""
    model = _load(folders, "sd3", guidance_scale=1.0)
    cond = model.encode(PROMPTS[:1] * 2)
    seeds = torch.tensor([5, 5])  # one seed twice: the same path down to the cutoff
    default = RunConfig(model=str(folders["sd3"]), prompts=PROMPTS[:1], method="pgraft", cutoff=0.5)
    assert default.effective_eta == 1.0
    stochastic = sample(model, seeds, 6, eta=default.effective_eta, cutoff=0.5, finetuned=model, cond=cond)
    torch.testing.assert_close(stochastic.x_cut[0], stochastic.x_cut[1])
    assert torch.equal(stochastic.samples[0], stochastic.samples[1])  # same seed, same noises: same sample ...
    other = sample(model, torch.tensor([5, 6]), 6, eta=1.0, cutoff=0.5, finetuned=model, cond=cond)
    assert (other.samples[0] - other.samples[1]).abs().max() > 1e-3  # ... another seed's noises differ


def test_a_reward_rises_over_two_rounds_on_a_tiny_flow_pipeline(folders, tmp_path):
    """Brightness of the decoded images on tiny SD3, GRAFT on the stochastic sampler. Measured: +3.1 and +2.5
    standard errors of round 0's mean after rounds 1 and 2 with seed 0, +3.2 and +3.0 with seed 1 (P-GRAFT at
    0.4: +2.6 / +1.0 and +3.3 / +4.6; a random tiny transformer moves its images slowly)."""
    from pgraft.registry import REWARDS, register_reward
    from pgraft.rewards import RewardSpec

    brightness = RewardSpec(lambda c: lambda x: x.double().mean(dim=(1, 2, 3)), "t2i", "mean")
    register_reward("test-brightness-flow", brightness)
    try:
        config = RunConfig(
            model=str(folders["sd3"]), prompts=PROMPTS, reward="test-brightness-flow", samples=32, preview=2,
            num_inference_steps=8, finetune_steps=40, batch_size=8, lr=1e-2, rounds=2, guidance_scale=2.0, seed=1,
            **SIZE,
        )  # fmt: skip
        table = pd.DataFrame([r.metrics for r in run_to_end(RoundRunner(config, out=tmp_path / "run"))])
    finally:
        REWARDS.pop("test-brightness-flow", None)
    assert list(table["round"]) == [0, 1, 2]
    standard_error = table["reward_std"][0] / len(PROMPTS * 32) ** 0.5
    assert table["reward_mean"][1] > table["reward_mean"][0] + 2 * standard_error, table["reward_mean"]
    assert table["reward_mean"][2] > table["reward_mean"][0] + 2 * standard_error, table["reward_mean"]


def _images(n, seed=0):
    """Smooth test images in [0, 1] (a coloured block on a background), `(n, 3, H, W)`."""
    gen = torch.Generator().manual_seed(seed)
    h, w = SIZE["height"], SIZE["width"]
    x = 0.2 + 0.1 * torch.rand(n, 3, 1, 1, generator=gen).expand(n, 3, h, w).clone()
    for i in range(n):
        x[i, :, 2 + i % 4 : 10 + i % 4, 3:12] = torch.rand(3, 1, 1, generator=gen)
    return x


@pytest.mark.parametrize("kind", ["sd3", "flux"])
def test_latents_inverted_through_the_pipeline_come_back_through_the_stock_pipeline(folders, kind):
    """Real images -> VAE latents -> backward Euler through the pipeline's own flow-matching sampler: the stock
    diffusers pipeline, started from the inverted noises on the same grid, lands on the images' latents (to
    the solver's tolerance, propagated over the steps); under another prompt it does not."""
    from pgraft.inc.latents import invert_images

    model = _load(folders, kind, guidance_scale=1.0)
    images = _images(3)
    result = invert_images(model, images, [PROMPTS[0]] * 3, 6, tol=1e-5)
    assert int(result.inversion.failed.sum()) == 0 and result.inversion.max_residual <= 1e-5
    assert float(result.roundtrip.max()) < 1e-4  # G(z) = E(x), measured by sampling again
    theirs = _stock_latents(_stock(folders[kind], kind), kind, [PROMPTS[0]] * 3, result.noises, 6, 1.0)
    torch.testing.assert_close(theirs, result.latents, rtol=0, atol=2e-4)
    assert (result.noises - result.latents).abs().max() > 0.1  # the noises are not the latents
    other = _stock_latents(_stock(folders[kind], kind), kind, [PROMPTS[1]] * 3, result.noises, 6, 1.0)
    assert (other - result.latents).abs().max() > 100 * (theirs - result.latents).abs().max()


@pytest.mark.parametrize("kind", ["sd3", "flux"])
def test_inverting_on_the_karras_grid_is_inverting_the_stock_pipeline_with_karras_sigmas(folders, kind):
    """`grid="karras"` is the folder's scheduler with diffusers' `use_karras_sigmas` (after the folder's shift,
    Flux's at the image's `mu`): the stock pipeline with that scheduler, from the inverted noises, lands on the
    latents; with the folder's own scheduler it does not."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from pgraft.inc.latents import invert_images

    model = _load(folders, kind, guidance_scale=1.0)
    result = invert_images(model, _images(2), [PROMPTS[0]] * 2, 6, tol=1e-5, grid="karras")
    assert int(result.inversion.failed.sum()) == 0 and float(result.roundtrip.max()) < 1e-4
    pipe = _stock(folders[kind], kind)
    own = _stock_latents(pipe, kind, [PROMPTS[0]] * 2, result.noises, 6, 1.0)
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config, use_karras_sigmas=True)
    theirs = _stock_latents(pipe, kind, [PROMPTS[0]] * 2, result.noises, 6, 1.0)
    torch.testing.assert_close(theirs, result.latents, rtol=0, atol=2e-4)
    assert (own - result.latents).abs().max() > 100 * (theirs - result.latents).abs().max()


def test_image_latents_are_the_vaes_with_its_scaling_and_shift_undone_by_decode(folders):
    model = _load(folders, "flux")  # Flux's VAE has a shift factor as well as a scaling factor
    vae = model.pipe.vae
    vae.config.shift_factor = 0.1  # the tiny config leaves it unset: set one so that it is tested
    try:
        images = _images(2)
        latents = model.encode_images(images)
        assert latents.shape == (2, *model.sample_shape)
        with torch.no_grad():
            raw = vae.encode(images * 2 - 1).latent_dist.mode()
            direct = ((vae.decode(raw).sample + 1) / 2).clamp(0, 1)
        torch.testing.assert_close(latents, (raw - 0.1) * vae.config.scaling_factor)
        torch.testing.assert_close(model.decode(latents), direct, rtol=0, atol=1e-5)
    finally:
        vae.config.shift_factor = None


def test_pgraft_invert_writes_the_noises_and_refuses_what_it_cannot_invert(folders, tmp_path):
    from PIL import Image
    from safetensors import safe_open
    from safetensors.torch import load_file

    from pgraft.cli import main

    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for i, image in enumerate(_images(3)):
        array = (image.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        Image.fromarray(array).resize((24, 20)).save(pictures / f"p{i}.png")  # another size: fit and crop
    (pictures / "readme.txt").write_text("not an image")
    out = tmp_path / "inverted"
    argv = ["invert", "--model", str(folders["sd3"]), "--images", str(pictures), "--prompt", PROMPTS[0]]
    argv += ["--num-inference-steps", "6", "--height", "16", "--width", "16", "--out", str(out), "--quiet"]
    assert main([*argv, "--grid", "karras"]) == 0
    tensors = load_file(out / "noises.safetensors")
    assert tensors["noises"].shape == tensors["latents"].shape and tensors["noises"].shape[0] == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["inverted"] == 3 and summary["roundtrip_max"] < 1e-3
    # the sampler the noises belong to is written with them: on another grid they land elsewhere
    with safe_open(out / "noises.safetensors", "pt") as f:
        meta = f.metadata()
    assert (summary["grid"], meta["grid"], meta["num_inference_steps"]) == ("karras", "karras", "6")
    steps = pd.read_csv(out / "steps.csv")
    assert list(steps["index"]) == list(range(6)) and (steps["residual"] <= 1e-4).all()
    assert (out / "roundtrip.png").stat().st_size > 100
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*argv[:4], str(empty), "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert main(["invert", "--model", "digits-flow", "--images", str(pictures), "--quiet"]) == 2
    assert main(["invert", "--model", str(folders["sd3"]), "--images", str(tmp_path / "absent"), "--quiet"]) == 2
