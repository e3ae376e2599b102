"""A spectral-norm hinge GAN, packaged as a ganops trainer plugin (entry point `sngan`)."""
