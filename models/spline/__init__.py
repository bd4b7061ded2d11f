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
``latent_regions``     6. exact regions of a generator's 1-D / 2-D latent space
``truncated_normal``   6. Gaussian moments over intervals and convex polygons
``em_generator``       6. piecewise-affine generator: exact p(x), posterior, EM; VAE baseline
``gan_ensemble``       6. generator ensembles with the coupling regulariser
``sample_quality``     6. k-NN precision / recall and cluster coverage of generated samples
``lie_shift``          6. time / log-frequency shifts of windows as a Lie group
``group_ae``           6. autoencoder with the group regulariser, generalisation gap
=====================  ==========================================================================

The stage runner behind ``scatterbird analyze`` and its report writer read and write files, so they live
in ``pipeline/analysis/run.py`` and ``pipeline/analysis/report.py`` (``models/`` only takes and returns
arrays).
"""

from .affine import AffineForm, affine_form, explicit_affine, jacobian, template_stats
from .betavq import DEFAULT_BETAS, BetaVQ, beta_sweep, binary_metrics, expected_calibration_error, set_beta, soften
from .codes import code_statistics, hamming, input_codes, nearest_neighbours, region_ids
from .em_generator import CPAGenerator, EMFit, Posterior, fit_em, fit_vae, marginal_log_likelihood
from .gan_ensemble import GANEnsemble, coupling_penalty, fit_gan_ensemble, sweep_coupling
from .group_ae import AEFit, fit_group_autoencoder, generalisation_gap, group_regulariser, sample_windows
from .latent_regions import LatentRegions, enumerate_regions
from .lie_shift import shift_windows
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
from .sample_quality import cluster_coverage, knn_precision_recall
from .truncated_normal import interval_moments, polygon_moments

__all__ = [
    "DEFAULT_BETAS",
    "ORTHO_VARIANTS",
    "AEFit",
    "Abs",
    "AffineForm",
    "BetaVQ",
    "CPAGenerator",
    "EMFit",
    "GANEnsemble",
    "LatentRegions",
    "Posterior",
    "SplineNet",
    "affine_form",
    "augmentation_rugosity",
    "beta_sweep",
    "binary_metrics",
    "centroid_radius",
    "cluster_coverage",
    "code_statistics",
    "coupling_penalty",
    "enumerate_power_diagram",
    "enumerate_regions",
    "expected_calibration_error",
    "explicit_affine",
    "fit_em",
    "fit_gan_ensemble",
    "fit_group_autoencoder",
    "fit_vae",
    "flatten_modules",
    "generalisation_gap",
    "group_regulariser",
    "hamming",
    "handler_for",
    "hessian_direction_norm",
    "input_codes",
    "interval_moments",
    "jacobian",
    "jacobian_norm",
    "knn_precision_recall",
    "layer_piece_maps",
    "local_complexity",
    "marginal_log_likelihood",
    "nearest_neighbours",
    "ortho_penalty",
    "polygon_moments",
    "power_assign",
    "region_ids",
    "regions_on_segment",
    "regions_on_segment_dense",
    "register_affine",
    "register_pieces",
    "sample_windows",
    "set_beta",
    "shift_windows",
    "slice_regions",
    "soften",
    "spline_view",
    "sweep_coupling",
    "tangent_rugosity",
    "template_ortho_penalty",
    "template_overlap",
    "template_stats",
    "weight_ortho_penalty",
    "weight_overlap",
]
