"""Convolutional autoencoder detector (reconstruction error; AE-L2 / AE-SSIM, Bergmann et al. 2019)."""
