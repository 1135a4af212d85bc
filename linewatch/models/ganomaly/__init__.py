"""GANomaly (Akcay et al., ACCV 2018): encoder-decoder-encoder generator, latent-distance score."""
