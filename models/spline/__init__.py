"""Spline-theory analyses of trained piecewise-affine detectors (derivations: docs/spline-analyses.md).

Every stage works on any network made of affine parts and max-affine nonlinearities (see
:mod:`models.spline.network`), viewed through :class:`SplineNet`:

=====================  ==========================================================================
module                 stage
=====================  ==========================================================================
``network``            the CPA view: affine parts, piecewise parts and their pieces, VQ codes
``affine``             1. affine form ``f(x) = A[x] x + B[x]``, templates, bias share, overlap
``penalties``          1. template-orthogonality penalties (read-out weights, input templates)
``codes``              2. VQ codes, code statistics, Hamming VQ distance, retrieval
``power_diagram``      3. centroids/radii, layer power diagrams, exact regions along segments,
                          local complexity, 2-D slices
``betavq``             4. beta-VQ nonlinearities and the post-hoc beta sweep
``directions``         audio directions (time/frequency shift, gain, noise) in the input space
``rugosity``           5. finite-difference tangent-Hessian (rugosity)
``testing``            small random networks the identities are tested on
=====================  ==========================================================================

The stage runner behind ``scatterbird analyze`` and its report writer read and write files, so they live
in ``pipeline/analysis/run.py`` and ``pipeline/analysis/report.py`` (``models/`` only takes and returns
arrays).
"""

from .affine import AffineForm, affine_form, explicit_affine, jacobian, template_stats
from .betavq import DEFAULT_BETAS, BetaVQ, beta_sweep, binary_metrics, expected_calibration_error, set_beta, soften
from .codes import code_statistics, hamming, input_codes, nearest_neighbours, region_ids
from .network import Abs, SplineNet, flatten_modules, handler_for, register_affine, register_pieces, spline_view
from .penalties import (
    ORTHO_VARIANTS,
    ortho_penalty,
    template_ortho_penalty,
    template_overlap,
    weight_ortho_penalty,
    weight_overlap,
)
from .power_diagram import (
    centroid_radius,
    enumerate_power_diagram,
    layer_piece_maps,
    local_complexity,
    power_assign,
    regions_on_segment,
    regions_on_segment_dense,
    slice_regions,
)
from .rugosity import augmentation_rugosity, hessian_direction_norm, jacobian_norm, tangent_rugosity

__all__ = [
    "Abs",
    "AffineForm",
    "BetaVQ",
    "DEFAULT_BETAS",
    "ORTHO_VARIANTS",
    "SplineNet",
    "affine_form",
    "augmentation_rugosity",
    "beta_sweep",
    "binary_metrics",
    "centroid_radius",
    "code_statistics",
    "enumerate_power_diagram",
    "expected_calibration_error",
    "explicit_affine",
    "flatten_modules",
    "hamming",
    "handler_for",
    "hessian_direction_norm",
    "input_codes",
    "jacobian",
    "jacobian_norm",
    "layer_piece_maps",
    "local_complexity",
    "nearest_neighbours",
    "ortho_penalty",
    "power_assign",
    "region_ids",
    "regions_on_segment",
    "regions_on_segment_dense",
    "register_affine",
    "register_pieces",
    "set_beta",
    "slice_regions",
    "soften",
    "spline_view",
    "tangent_rugosity",
    "template_ortho_penalty",
    "template_overlap",
    "template_stats",
    "weight_ortho_penalty",
    "weight_overlap",
]
