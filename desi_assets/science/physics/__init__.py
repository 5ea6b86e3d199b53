"""Physics scalars: spectral indices (Dn4000, Lick) and pPXF stellar kinematics + emission lines (pure numpy/ppxf)."""
