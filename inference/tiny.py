"""A tiny random-weight Wan2.1 I2V checkpoint for development and tests.

It uses exactly the classes and the on-disk layout of the real Wan2.1-I2V-14B diffusers
checkpoint (model_index.json plus one folder per component), so ``checkpoint.load_pipeline``
loads it through the same code path as the real model. Only the sizes differ. Its output is
noise, but with the real shapes: 16 latent channels, 36 transformer input channels (16 noise
+ 4 mask + 16 image condition), 4x temporal and 8x spatial VAE compression, 224px CLIP input.

No download is involved anywhere: even the tokenizer is built in-process.
"""
from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanImageToVideoPipeline, WanTransformer3DModel
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    CLIPVisionModel,
    PreTrainedTokenizerFast,
    UMT5Config,
    UMT5EncoderModel,
)

# Sizes. The comments give the real Wan2.1-I2V-14B values.
TEXT_DIM = 32  # umt5-xxl d_model 4096
IMAGE_DIM = 80  # CLIP ViT-H/14 hidden size 1280; one head of ViT-H's width (80)
NUM_HEADS = 4  # 40; 4 so that Ulysses over 2 and 4 ranks divides it
HEAD_DIM = 8  # 128; must split into the 3 rotary axes (t, h, w)
LATENT_CHANNELS = 16  # z_dim 16, the same as the real VAE
MAX_TEXT_TOKENS = 512  # the pipeline pads prompts to 512 tokens

# T5's special tokens, in T5's order, so that pad id is 0 as the real tokenizer has it.
_SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "</s>", "<unk>")

# A few sentences whose words make up the tiny tokenizer's vocabulary; everything else is <unk>.
_CORPUS: tuple[str, ...] = (
    "a cat walks slowly across a sunny garden while the camera follows",
    "an astronaut floats above the moon with earth in the background",
    "waves crash on a rocky beach at sunset, cinematic lighting, high quality",
    "a red car drives through a rainy city street at night",
    "a dog runs on green grass and jumps to catch a ball",
    "low quality, blurred details, static, overexposed, worst quality, ugly, deformed",
    "bright tones, subtitles, still picture, messy background, extra fingers",
)


def _build_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer with T5's conventions (pad=0, eos=1, unk=2, </s> appended)."""
    # 1. Vocabulary: specials first, then the corpus words in sorted order (deterministic).
    words = sorted({word for sentence in _CORPUS for word in re.findall(r"\w+|[^\w\s]", sentence.lower())})
    vocab = {token: index for index, token in enumerate(_SPECIAL_TOKENS + tuple(words))}

    # 2. The tokenizers pipeline: lower-case, split words and punctuation, append </s> like T5.
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", vocab["</s>"])]
    )

    # 3. Wrap it so that save_pretrained / AutoTokenizer.from_pretrained round-trip it.
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=MAX_TEXT_TOKENS,
        padding_side="right",
    )


def _vocab_size_for(tokenizer: PreTrainedTokenizerFast) -> int:
    # Round up to a multiple of 64 so that a few added words never overflow the embedding.
    return (len(tokenizer) + 63) // 64 * 64


def _build_text_encoder(vocab_size: int) -> UMT5EncoderModel:
    config = UMT5Config(
        vocab_size=vocab_size,
        d_model=TEXT_DIM,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=128,  # umt5-xxl's; the original T5 format does not store it
        feed_forward_proj="gated-gelu",  # as umt5-xxl
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        tie_word_embeddings=False,
    )
    return UMT5EncoderModel(config)


def _build_image_encoder() -> CLIPVisionModel:
    config = CLIPVisionConfig(
        hidden_size=IMAGE_DIM,
        intermediate_size=64,
        num_hidden_layers=2,  # the pipeline reads hidden_states[-2], the penultimate layer
        num_attention_heads=1,  # heads of 80 channels, as ViT-H/14 (1280 = 16 x 80)
        image_size=224,  # the real CLIPImageProcessor crop size
        patch_size=32,  # 7x7 patches + 1 class token = 50 image tokens (real: 257)
        hidden_act="gelu",  # Wan's CLIP uses exact GELU, not CLIP's default quick_gelu
        projection_dim=IMAGE_DIM,
    )
    return CLIPVisionModel(config)


def build_image_processor() -> CLIPImageProcessorPil:
    # The standard OpenAI CLIP preprocessing, as in the real checkpoint's image_processor/. The
    # pipeline reads only its mean, std and size (inference/pipeline/encode.py clip_pixels).
    return CLIPImageProcessorPil(
        do_resize=True,
        size={"shortest_edge": 224},
        resample=3,  # bicubic
        do_center_crop=True,
        crop_size={"height": 224, "width": 224},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
        do_convert_rgb=True,
    )


def _build_vae() -> AutoencoderKLWan:
    # Three spatial and two temporal downsamplings, as the real VAE: 8x spatial, 4x temporal.
    return AutoencoderKLWan(
        base_dim=8,  # 96
        z_dim=LATENT_CHANNELS,
        dim_mult=[1, 2, 4, 4],
        num_res_blocks=2,  # as the real VAE (the original-layout converter relies on it)
        attn_scales=[],
        temperal_downsample=[False, True, True],
        dropout=0.0,
    )


def _build_transformer() -> WanTransformer3DModel:
    inner_dim = NUM_HEADS * HEAD_DIM
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=NUM_HEADS,
        attention_head_dim=HEAD_DIM,
        in_channels=2 * LATENT_CHANNELS + 4,  # noise + image-condition latents + 4 mask channels = 36
        out_channels=LATENT_CHANNELS,
        text_dim=TEXT_DIM,
        freq_dim=32,  # 256
        ffn_dim=64,  # 13824
        num_layers=2,  # 40
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
        image_dim=IMAGE_DIM,
        added_kv_proj_dim=inner_dim,  # the real I2V model projects image tokens to the inner dim too
        rope_max_seq_len=1024,
    )


def build_scheduler() -> UniPCMultistepScheduler:
    return UniPCMultistepScheduler(
        num_train_timesteps=1000,
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=5.0,
        solver_order=2,
    )


def build_tiny_pipeline(*, seed: int = 0) -> WanImageToVideoPipeline:
    """The tiny pipeline in memory, with weights drawn deterministically from seed."""
    # 1. Seed the global RNG: the modules draw their initial weights from it.
    torch.manual_seed(seed)

    # 2. The tokenizer decides the text encoder's vocabulary size.
    tokenizer = _build_tokenizer()

    # 3. Build each component in a fixed order so that a given seed gives the same weights.
    text_encoder = _build_text_encoder(_vocab_size_for(tokenizer))
    image_encoder = _build_image_encoder()
    vae = _build_vae()
    transformer = _build_transformer()

    # 4. Assemble; everything stays fp32 on the CPU.
    return WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder.eval(),
        vae=vae.eval(),
        scheduler=build_scheduler(),
        image_processor=build_image_processor(),
        image_encoder=image_encoder.eval(),
        transformer=transformer.eval(),
    )


def create_tiny_checkpoint(out_dir: Path, *, seed: int = 0) -> Path:
    """Write the tiny checkpoint in the diffusers layout to out_dir and return its path.

    out_dir must not exist or be an empty folder. The checkpoint is written to a sibling
    temporary folder and renamed into place, so an interrupted run leaves no partial one.
    """
    # 1. Refuse to mix the checkpoint with existing files.
    out_dir = Path(out_dir).resolve()
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir} already exists and is not an empty folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)

    # 2. Build and save into a temporary sibling (same filesystem, so the rename is atomic).
    pipe = build_tiny_pipeline(seed=seed)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        pipe.save_pretrained(staging, safe_serialization=True)
        if out_dir.exists():
            out_dir.rmdir()
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir
