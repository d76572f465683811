"""Human evaluation of a benchmark run: a blinded pairwise study (the paper's Tables D and E).

``sample`` draws the comparisons, ``store`` keeps items and answers in the run's database, ``app``
serves the study in a browser, ``results`` computes win / lose / tie with intervals."""
