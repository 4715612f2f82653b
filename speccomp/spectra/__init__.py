"""The spectra domain: physics (forward model), the physics-aware oracle and floor, the tutorial figures."""
