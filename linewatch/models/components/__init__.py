"""Parts shared by several detectors: frozen-feature fitting, convolution blocks, SSIM, training helpers."""
