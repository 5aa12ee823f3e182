"""Analyses over networks and images: loops over units and images live here, the solvers below.

:mod:`.network_spectra` (scree values and band counts of every unit, Figures 1-2),
:mod:`.attacks`, :mod:`.propagation` and :mod:`.projections` and :mod:`.perturbations`
(Section 3.3), :mod:`.ablations` (Section 3.4), :mod:`.dynamics` (eigenvalues, Lyapunov
spectra), :mod:`.taylor` (the Jacobian test of Appendix A); :mod:`.statistics` (bootstrap
intervals and the signed-rank test over images), :mod:`.trends` (band fractions along the units),
:mod:`.image_dependence` (image-to-image against architecture distances).
"""
