"""The one DESI wavelength grid: the B/R/Z arms and the 16x binned layout (Å, vacuum)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Linear pixel step of every DESI arm (Å).
DESI_PIXEL_STEP_A = 0.8
#: Pixels averaged into one preprocessed bin.
BIN_FACTOR = 16
#: Width of one preprocessed bin (Å): 12.8.
BIN_WIDTH_A = BIN_FACTOR * DESI_PIXEL_STEP_A


@dataclass(frozen=True)
class Arm:
    """One spectrograph arm: name, first pixel centre and pixel count (Å, vacuum)."""

    name: str
    start_a: float
    npix: int

    @property
    def end_a(self) -> float:
        """Last pixel centre (Å)."""
        return self.start_a + DESI_PIXEL_STEP_A * (self.npix - 1)

    @property
    def nbins(self) -> int:
        """Whole groups of BIN_FACTOR pixels; the trailing remainder pixels are dropped."""
        return self.npix // BIN_FACTOR

    @property
    def remainder(self) -> int:
        """Pixels at the red end of the arm that do not fill a whole bin."""
        return self.npix - self.nbins * BIN_FACTOR

    def wavelength(self) -> np.ndarray:
        """Pixel-centre wavelengths of this arm (Å, float64), exactly DESI's grid."""
        return np.round(self.start_a + DESI_PIXEL_STEP_A * np.arange(self.npix), 4)


ARMS: dict[str, Arm] = {
    "b": Arm("b", 3600.0, 2751),
    "r": Arm("r", 5760.0, 2326),
    "z": Arm("z", 7520.0, 2881),
}
ARM_NAMES: tuple[str, ...] = tuple(ARMS)

#: Bins per arm after 16x binning: b 171, r 145, z 180 (496 in all).
ARM_NBINS: dict[str, int] = {k: a.nbins for k, a in ARMS.items()}
N_BINS: int = sum(ARM_NBINS.values())


def arm_bin_slices() -> dict[str, slice]:
    """Slice of each arm inside the 496-bin concatenated vector."""
    out, start = {}, 0
    for name, n in ARM_NBINS.items():
        out[name] = slice(start, start + n)
        start += n
    return out


def binned_wavelength() -> np.ndarray:
    """Mean wavelength of each of the 496 bins, arms concatenated b, r, z (Å)."""
    parts = []
    for arm in ARMS.values():
        w = arm.wavelength()[: arm.nbins * BIN_FACTOR]
        parts.append(w.reshape(arm.nbins, BIN_FACTOR).mean(axis=1))
    return np.concatenate(parts)


#: First pixel centre of the merged brz grid (Å): 3600.0, the b arm's.
COMBINED_START_A: float = ARMS["b"].start_a
#: Pixels of the merged brz grid: 7781 (3600.0-9824.0 Å).
COMBINED_NPIX: int = int(round((ARMS["z"].end_a - COMBINED_START_A) / DESI_PIXEL_STEP_A)) + 1


def combined_wavelength() -> np.ndarray:
    """The merged brz grid, 3600-9824 Å in 0.8 Å steps (7781 pixels)."""
    return np.round(COMBINED_START_A + DESI_PIXEL_STEP_A * np.arange(COMBINED_NPIX), 4)
