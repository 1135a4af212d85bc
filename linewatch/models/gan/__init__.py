"""GAN detector: a generator of good parts (DCGAN / WGAN-GP) and a reference bank of its images."""
