"""The Wan2.1 I2V pipeline as this project runs it: diffusers' models as parts, our own loop.

components.py  the loaded parts of one rank
loading.py     the placement plan: which part on which device, sharded or not
encode.py      text (UMT5), image (CLIP) and the VAE condition latents
denoise.py     the denoising loop, one hook per step
decode.py      latents to uint8 frames
compile.py     torch.compile of the DiT blocks, warmed up at load for the configured shapes
"""
