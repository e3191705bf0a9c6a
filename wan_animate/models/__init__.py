"""The Wan2.2-Animate networks: DiT (+ motion/face), umT5, CLIP visual, Wan 2.1 VAE, LoRA."""
