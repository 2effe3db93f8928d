"""Stable Diffusion 1.x / 2.x and SDXL folders through pgraft's loop, on tiny random pipelines built from configs
(CPU, offline, seconds): the stitched sampler against the stock pipeline, LoRA rounds a stock pipeline
reloads, P-GRAFT training above the cutoff in latent space, the t2i rewards on tiny CLIP and VLM folders, and
the errors a user meets first."""

from __future__ import annotations

import copy
import json
import re
import shutil

import pandas as pd
import pytest
import torch

from pgraft.core.sampling import sample, sample_seeds, seeded_noise
from pgraft.families.random_pipelines import build_pipeline
from pgraft.graft.config import RunConfig
from pgraft.graft.runner import RoundRunner, run_to_end
from pgraft.registry import load_model, make_reward, reward_context

PROMPTS = ["a red square", "a blue circle"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipelines")
    return {kind: build_pipeline(kind, root / kind) for kind in ("sd", "sd2-v", "sdxl")}


@pytest.fixture(scope="module")
def reward_folders(tmp_path_factory):
    from pgraft.domains.t2i.random_models import build_clip, build_vlm

    root = tmp_path_factory.mktemp("rewards")
    return {"clip": build_clip(root / "clip"), "vlm": build_vlm(root / "vlm")}


def _stock(folder, kind):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    cls = StableDiffusionXLPipeline if kind == "sdxl" else StableDiffusionPipeline
    pipe = cls.from_pretrained(str(folder), safety_checker=None) if kind != "sdxl" else cls.from_pretrained(str(folder))
    pipe.set_progress_bar_config(disable=True)
    if kind == "sdxl":  # the folder's Euler scheduler: pgraft samples with DDIM on the same betas and grid
        from diffusers import DDIMScheduler

        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False)
    return pipe


@pytest.mark.parametrize("kind", ["sd", "sd2-v", "sdxl"])
def test_at_eta_0_pgrafts_loop_reproduces_the_stock_pipeline(folders, kind):
    model = load_model(str(folders[kind]), guidance_scale=5.0)
    seeds = sample_seeds(0, 1, len(PROMPTS))
    ours = sample(model, seeds, 10, eta=0.0, cond=model.encode(PROMPTS)).samples
    init = seeded_noise(seeds, model.sample_shape, 1)[:, 0]
    pipe = _stock(folders[kind], kind)
    kwargs = dict(num_inference_steps=10, guidance_scale=5.0, eta=0.0, output_type="latent")
    theirs = pipe(PROMPTS, latents=init.clone(), height=model.height, width=model.width, **kwargs).images
    assert model.process.prediction_type == ("v_prediction" if kind == "sd2-v" else "epsilon")
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def test_the_base_view_is_the_base_network_exactly_with_a_trained_adapter_beside_it(folders):
    model = load_model(str(folders["sd"]), guidance_scale=3.0)
    pristine = copy.deepcopy(model.unet)  # before any adapter exists
    tuned = model.trainable_copy(seed=0)
    with torch.no_grad():  # make the adapter matter
        for p in tuned.trainable_parameters():
            p.add_(0.1 * torch.randn_like(p))
    tuned.frozen()
    cond = model.encode(PROMPTS)
    x, t = torch.randn(2, *model.sample_shape), torch.tensor([801, 301])
    emb = torch.cat([cond.tensors["negative_prompt_embeds"], cond.tensors["prompt_embeds"]])

    def reference() -> torch.Tensor:
        with torch.no_grad():
            out = pristine(torch.cat([x, x]), torch.cat([t, t]), encoder_hidden_states=emb).sample
        uncond, text = out.chunk(2)
        return uncond + 3.0 * (text - uncond)

    with torch.no_grad():
        assert torch.equal(model(x, t, cond), reference())
        assert (tuned(x, t, cond) - reference()).abs().max() > 1e-3
        stitched = sample(model, sample_seeds(0, 3, 2), 10, eta=1.0, finetuned=tuned, cutoff=0.5, cond=cond)
        assert stitched.cutoff_timestep is not None
        assert torch.equal(model(x, t, cond), reference())  # still exact after the stitched sampler switched


@pytest.mark.parametrize("kind", ["sd", "sdxl"])
def test_a_rounds_lora_loads_into_a_stock_pipeline_and_reproduces_its_samples(folders, kind, tmp_path):
    out = tmp_path / "run"
    config = RunConfig(
        model=str(folders[kind]), prompts=PROMPTS[:1], samples=4, preview=0, num_inference_steps=10,
        finetune_steps=20, batch_size=4, lr=1e-2, rounds=1, sampler="ddim", eta=0.0, guidance_scale=3.0,
        lora_rank=4, lora_alpha=8.0,
    )  # fmt: skip
    run_to_end(RoundRunner(config, out=out))
    round_dir = out / "rounds" / "round_001"
    assert (round_dir / "pytorch_lora_weights.safetensors").is_file() and (round_dir / "candidates.png").is_file()
    assert not any(p.name.startswith("diffusion_pytorch_model") for p in round_dir.iterdir())  # no base weights
    from safetensors.torch import load_file

    ours = load_file(str(round_dir / "samples.safetensors"))["samples"]
    base = load_file(str(out / "rounds" / "round_000" / "samples.safetensors"))["samples"]
    init = seeded_noise(sample_seeds(config.seed, 2 * 1000, 4), tuple(ours.shape[1:]), 1)[:, 0]
    pipe = _stock(folders[kind], kind)
    pipe.load_lora_weights(str(round_dir))
    size = {"height": ours.shape[-2] * 2, "width": ours.shape[-1] * 2}
    kwargs = dict(num_inference_steps=10, guidance_scale=3.0, eta=0.0, output_type="latent", **size)
    theirs = pipe(PROMPTS[:1] * 4, latents=init.clone(), **kwargs).images
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)  # float rounding of one kernel order
    assert (ours - base).abs().max() > 1e-2  # and fine-tuning did change the samples


@pytest.mark.parametrize("kind", ["sd", "sd2-v"])
def test_pgraft_trains_only_above_the_cutoff_in_latent_space_with_the_kernels_target(folders, kind):
    from pgraft.core.finetune import FinetuneData, finetune_iter, training_example

    model = load_model(str(folders[kind]), guidance_scale=1.0)
    process = model.process
    seen: list[torch.Tensor] = []
    hook = model.unet.register_forward_pre_hook(
        lambda m, args, kw: seen.append(args[1].detach().clone()), with_kwargs=True
    )
    try:
        tuned = model.trainable_copy(seed=1)
        cut = 501.0
        cond = model.encode(PROMPTS[:1])
        data = FinetuneData(torch.randn(6, *model.sample_shape), cond[torch.zeros(6, dtype=torch.long)], cut, cut)
        for _ in finetune_iter(tuned, data, steps=6, batch_size=3, lr=1e-3, seed=0):
            pass
    finally:
        hook.remove()
    steps = torch.cat(seen)
    assert steps.min() > cut and steps.max() <= process.num_train_timesteps - 1
    assert all(s.shape == (3,) for s in seen)  # one latent batch per step, unguided at scale 1
    # the targets: the scheduler's own at t_c = 0, the truncated kernel's above it (docs/method.md §2)
    x0, noise = torch.randn(4, *model.sample_shape), torch.randn(4, *model.sample_shape)
    t = torch.tensor([100, 400, 700, 999])
    _, target, weight = training_example(process, x0, t, noise, None)
    expected = process.train_scheduler.get_velocity(x0, noise, t) if kind == "sd2-v" else noise
    torch.testing.assert_close(target, expected.to(target.dtype), rtol=1e-5, atol=1e-5)
    x_t, target, weight = training_example(process, x0, t + 0, noise, 50.0)
    abar = process.alphas_cumprod
    r = (abar[t] / abar[50]).view(-1, 1, 1, 1)
    eps = (1 - abar[t]).sqrt().view(-1, 1, 1, 1) * noise / (1 - r).sqrt()
    if kind == "sd2-v":  # v = a ε* − σ x0*, with x0* = (x_t − σ ε*) / a
        a_t, s_t = abar[t].sqrt().view(-1, 1, 1, 1), (1 - abar[t]).sqrt().view(-1, 1, 1, 1)
        eps = a_t * eps - s_t * (x_t - s_t * eps) / a_t
    torch.testing.assert_close(target.double(), eps.double(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(weight.double().flatten(), ((1 - r) / (1 - abar[t].view(-1, 1, 1, 1))).flatten())


def test_a_reward_rises_over_two_rounds_on_a_tiny_pipeline(folders, tmp_path):
    """Brightness of the decoded images: a reward a random tiny pipeline can move (measured: +5 standard
    errors of the mean over two rounds, seeds 0 and 1)."""
    from pgraft.registry import REWARDS, register_reward
    from pgraft.rewards import RewardSpec

    register_reward("test-brightness", RewardSpec(lambda c: lambda x: x.double().mean(dim=(1, 2, 3)), "t2i", "mean"))
    try:
        config = RunConfig(
            model=str(folders["sd"]), prompts=PROMPTS, reward="test-brightness", samples=16, preview=2,
            num_inference_steps=8, finetune_steps=30, batch_size=8, lr=1e-2, rounds=2, guidance_scale=2.0, seed=0,
        )  # fmt: skip
        table = pd.DataFrame([r.metrics for r in run_to_end(RoundRunner(config, out=tmp_path / "run"))])
    finally:
        REWARDS.pop("test-brightness", None)
    assert list(table["round"]) == [0, 1, 2]
    standard_error = table["reward_std"][0] / len(PROMPTS * 16) ** 0.5
    assert table["reward_mean"][2] > table["reward_mean"][0] + 3 * standard_error
    assert (tmp_path / "run" / "rounds" / "round_002" / "preview.png").is_file()


# --- rewards ---------------------------------------------------------------------------------------------
def _images(n: int = 4, size: int = 32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, size, size, generator=gen)


def test_clip_rewards_equal_their_recipes_from_the_model_api(reward_folders):
    from transformers import CLIPModel, CLIPProcessor

    folder = str(reward_folders["clip"])
    images, prompts = _images(), ["a red square", "a blue circle", "a red square", "a green circle"]
    clip = make_reward("clip-score", "t2i", {"model": folder})
    pick = make_reward("pickscore", "t2i", {"model": folder})
    model = CLIPModel.from_pretrained(folder).eval()
    processor = CLIPProcessor.from_pretrained(folder)
    from pgraft.domains.t2i.rewards import clip_pixels

    with torch.no_grad():
        pixels = clip_pixels(images, processor.image_processor, torch.device("cpu"), torch.float32)
        e_img = model.get_image_features(pixel_values=pixels).pooler_output
        text = processor.tokenizer(prompts, padding=True, return_tensors="pt")
        e_txt = model.get_text_features(**text).pooler_output
    cos = torch.nn.functional.cosine_similarity(e_img, e_txt).double()
    torch.testing.assert_close(clip(images, prompts), 100 * cos.clamp_min(0), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(pick(images, prompts), model.logit_scale.exp().double() * cos, rtol=1e-5, atol=1e-4)
    assert torch.equal(torch.argsort(pick(images, prompts)), torch.argsort(cos))  # the known ordering


def test_the_aesthetic_head_ranks_the_image_it_points_at_first(reward_folders, tmp_path):
    from safetensors.torch import save_file

    from pgraft.domains.t2i.rewards import clip_image_embeddings

    folder = str(reward_folders["clip"])
    images = _images(4)
    target = clip_image_embeddings(images[2:3], folder, torch.device("cpu"))[0]
    save_file({"weight": target[None].contiguous(), "bias": torch.zeros(1)}, str(tmp_path / "head.safetensors"))
    reward = make_reward("aesthetic", "t2i", {"model": folder, "head": str(tmp_path / "head.safetensors")})
    scores = reward(images)
    assert int(scores.argmax()) == 2 and float(scores[2]) == pytest.approx(1.0, abs=1e-5)  # cos of itself
    mlp = {"layers.0.weight": torch.randn(8, 16), "layers.0.bias": torch.zeros(8), "layers.2.weight": torch.randn(1, 8)}
    save_file(mlp, str(tmp_path / "mlp.safetensors"))
    assert make_reward("aesthetic", "t2i", {"model": folder, "head": str(tmp_path / "mlp.safetensors")})(
        images
    ).shape == (4,)


def test_vqa_score_is_the_yes_probability_batched_as_one_by_one(reward_folders):
    folder = str(reward_folders["vlm"])
    images, prompts = _images(3, 16), ["a red square", "a blue circle", "a green square"]
    vocab = make_reward("vqa-score", "t2i", {"model": folder})
    yes_no = make_reward("vqa-score", "t2i", {"model": folder, "normalise": "yes-no"})
    batched = vocab(images, prompts)
    single = torch.cat([vocab(images[i : i + 1], prompts[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-6)
    both = yes_no(images, prompts)
    assert bool(((batched > 0) & (batched < 1)).all()) and bool((both >= batched).all()) and bool((both < 1).all())


# --- errors a user meets first -----------------------------------------------------------------------------
def test_bad_folders_prompt_files_and_pickles_give_clear_errors(folders, tmp_path, capsys):
    from pgraft.cli import main

    pickled = tmp_path / "pickled"
    shutil.copytree(folders["sd"], pickled)
    for weights in (pickled / "unet").glob("*.safetensors"):
        weights.rename(weights.with_suffix(".bin"))
    other = tmp_path / "other"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyPipeline"}))
    (tmp_path / "prompts.txt").write_text("\n\n")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe")
    fast = ["--samples", "4", "--preview", "0", "--num-inference-steps", "4", "--rounds", "1", "--quiet"]
    cases = [
        (["--model", str(pickled), "--prompts", "x"], "only pickled weights"),
        (["--model", str(other), "--prompts", "x"], "supported pipelines"),
        (["--model", str(tmp_path / "missing"), "--prompts", "x"], "--model"),
        (["--model", "org/not-cached", "--prompts", "x"], "local folder"),
        (["--model", str(folders["sd"]), "--prompt-file", str(tmp_path / "prompts.txt")], "holds no prompt"),
        (["--model", str(folders["sd"]), "--prompt-file", str(tmp_path / "binary.txt")], "not a UTF-8"),
        (["--model", str(folders["sd"]), "--prompt-file", str(tmp_path / "nope.txt")], "not a file"),
        (["--model", str(folders["sd"]), "--prompts", "x", "--reward", "clip-score"], "--reward-arg model"),
        (["--model", str(folders["sd"]), "--prompts", "x", "--height", "33"], "--height"),
        (["--model", str(folders["sd"]), "--prompts", "x", "--lora-targets", "nope"], "--lora-targets"),
        (["--model", str(folders["sd"]), "--prompts", "x", "--dtype", "fp8"], "--dtype"),
    ]
    for args, needle in cases:
        code = main(["run", "--out", str(tmp_path / "run"), *fast, *args])
        err = capsys.readouterr().err
        assert code in (1, 2) and needle in err and "Traceback" not in err, (args, err)
    prompts = tmp_path / "good.txt"
    prompts.write_text("a red square\n\na blue circle\n")
    config = RunConfig(model=str(folders["sd"]), prompt_file=str(prompts))
    assert config.prompts == PROMPTS and config.prompt_file is None  # config.yaml holds the prompts themselves


def test_user_rewards_receive_images_in_0_1_and_the_prompts(folders):
    from pgraft.registry import sample_view

    assert "(N, 3, H, W)" in sample_view("t2i").description
    model = load_model(str(folders["sd"]), guidance_scale=1.0)
    images = model.decode(torch.randn(2, *model.sample_shape))
    assert images.shape == (2, 3, model.height, model.width) and float(images.min()) >= 0 and float(images.max()) <= 1
    assert reward_context(model)["model"] is model


# --- the app ---------------------------------------------------------------------------------------------
def test_the_app_offers_the_pipelines_of_its_models_dir_and_runs_a_round(folders, reward_folders, tmp_path):
    """A pipeline folder in `--models-dir` is in the model list and runs rounds in the page; a reward's model
    argument must name an entry of that folder, never a path typed in the page."""
    import shutil

    from gradio_client import Client
    from gradio_client.exceptions import AppError

    from pgraft.ui.app import build_demo

    models = tmp_path / "models"
    shutil.copytree(folders["sd"], models / "tiny-sd")
    shutil.copytree(reward_folders["clip"], models / "clip")
    demo = build_demo(device="cpu", sessions_root=tmp_path / "sessions", warm=False, models_dir=models)
    demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    try:
        client = Client(demo.local_url, verbose=False)
        path = str((models / "tiny-sd").resolve())
        small = dict(
            model=path, prompts=["a photo of a cat"], samples=4, preview=2, num_inference_steps=4,
            finetune_steps=2, batch_size=4, rounds=1, rule="best-of-n", n=2,
        )  # fmt: skip
        final = client.predict(**small, reward="clip-score", reward_args="model=clip", api_name="/run")
        assert "Finished: 1 round after the base" in final[0], final[0]
        assert "runs on the CPU: a full-size pipeline takes minutes per image" in final[0]
        assert re.search(r"round 1: fine-tuning [\d.]+ s, sampling [\d.]+ s", final[0]), final[0]  # time per part
        rows = final[5]["data"]
        assert [row[0] for row in rows] == [0, 1]
        with pytest.raises(AppError, match="write a plain word"):
            client.predict(**small, reward="clip-score", reward_args=f"model={reward_folders['clip']}", api_name="/run")
        with pytest.raises(AppError, match=r"not one of the model files found .*\['clip'\]"):
            client.predict(**small, reward="clip-score", reward_args="model=tiny-sd", api_name="/run")
        with pytest.raises(AppError, match="not in the list of choices"):
            client.predict(**{**small, "model": str(folders["sdxl"])}, reward="jpeg-compressibility", api_name="/run")
    finally:
        demo.close()
