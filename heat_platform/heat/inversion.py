"""Classical inversion for the diffusivity: discrete adjoint + Tikhonov + L-BFGS-B.

Given observations u_i at (x_i, y_i, t_i) with noise std sigma_i, find the node values of
a(x, y) on the grid of :mod:`heat_platform.heat.solver` that minimise

    J(m) = chi^2 / 2 + w/2 [R(a) + c_0 R_0(u^0) + c_g R_g(g)],
    chi^2 = sum_i ((H U(m))_i - u_i)^2 / sigma_i^2.

* U(m): the Crank-Nicolson solution of the solver (same grid, same arithmetic face means of
  a) for the parameters m; H: trilinear interpolation to the observation points (sparse).
* R(a): Tikhonov smoothness penalty, ``"gradient"`` (H1 seminorm, integral |grad a|^2) or
  ``"laplacian"`` (H2 seminorm, integral (Laplacian a)^2). Both are made dimensionless with
  the length L = sqrt(area) and a reference diffusivity a_ref (the mean known boundary
  value), the Laplacian one also divided by (2 pi)^2 so that the two agree on a feature one
  L across: one weight then means about the same on any rectangle and for either penalty.
* Unknown initial and boundary temperatures. When the problem gives u0 or g they are used
  as given. When it does not, they are estimated together with a, as smooth nuisance fields
  with far fewer degrees of freedom than the solver has nodes (the data see them only near
  t0 and next to the boundary): u^0 bilinear on a coarse grid (every
  ``temperature_coarsening[0]`` nodes, at least 8 cells a side), g linear between knots
  around the perimeter and in time (every ``temperature_coarsening[0]`` boundary nodes and
  ``temperature_coarsening[1]`` levels, at least 32 and 9 knots). R_0 = integral |grad u^0|^2
  and R_g = integral over the perimeter and [t0, t1] of g_s^2 + (T/L)^2 g_t^2, both divided by
  the variance of the data (dimensionless). They share the one weight w through the fixed
  ratios (c_0, c_g) = ``temperature_ratios``, so that the discrepancy principle trades all the
  smoothing off against the noise together (with separate fixed weights the nuisance fields
  soak up noise at small sigma and the principle over-smooths a). No truth formula is used.

The weight w is either fixed or chosen by Morozov's discrepancy principle: the largest w
found with chi^2 <= number of observations, by a search over log10(w) with warm starts,
first on a grid with half the cells and steps (a fit there costs about a sixth; skipped when
that grid's own error hides the noise level), then on the requested grid from the
prolonged solution.

The gradient is the exact gradient of the discrete J (discrete adjoint). With the step
M u^{n+1} = P u^n + dt/2 (L_IB (g^n + g^{n+1}) + f^n + f^{n+1}), M = I - dt/2 L_II,
P = I + dt/2 L_II = 2I - M, and q^n = d(chi^2/2)/dU^n = (H^T (r / sigma))^n split into its
interior (q_I) and boundary (q_B) parts, the adjoint lambda^n (n = N..1) solves

    M^T lambda^N = q_I^N,    M^T lambda^n = q_I^n + P^T lambda^{n+1},

reusing the LU of the forward step (``CrankNicolson.solve_transposed``), and

    d(chi^2/2)/du^0 = q_I^0 + P^T lambda^1,
    d(chi^2/2)/dg^n = q_B^n + dt/2 L_IB^T (lambda^n + lambda^{n+1})   (lambda^0 = lambda^{N+1} = 0),
    d(chi^2/2)/da   = dt/2 sum_n d/da [lambda^{n+1} . L(a) (U^n + U^{n+1})],

where the last term is evaluated face by face: lambda . L(a) W = -sum_faces a_f
(lambda_q - lambda_p)(W_q - W_p) / h^2 with lambda = 0 on the boundary, and the arithmetic
face mean a_f = (a_p + a_q) / 2 hands half of each face's term to each of its two nodes.
The coarse temperature parameters get B^T of these node gradients (chain rule).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.optimize import minimize

from .solver import (
    CrankNicolson,
    ForwardSolution,
    Grid,
    assemble,
    bilinear,
    evaluate,
    interpolation_matrix,
    node_values,
    time_levels,
)

PENALTIES = ("gradient", "laplacian")
MIN_KNOTS = 8  # least cells of the coarse temperature fields per direction
TEMPERATURE_COARSENING = (4, 5)  # knots every 4 nodes in space, every 5 levels in time


# --- Smoothness penalties: R(v) = v . K v with K = D^T D, D scaled so that R approximates an integral
def _difference(n_nodes: int, h: float) -> sp.csr_matrix:
    """1-D forward differences (n_nodes - 1, n_nodes) divided by h."""
    ones = np.ones(n_nodes - 1)
    return sp.diags([-ones, ones], [0, 1], shape=(n_nodes - 1, n_nodes), format="csr") / h


def gradient_penalty(grid: Grid) -> sp.csr_matrix:
    """K with v . K v = sum over faces (difference / h)^2 hx hy  ~  integral |grad v|^2."""
    D = sp.vstack(
        [
            sp.kron(sp.identity(grid.ny + 1), _difference(grid.nx + 1, grid.hx)),
            sp.kron(_difference(grid.ny + 1, grid.hy), sp.identity(grid.nx + 1)),
        ]
    )
    return (D.T @ D).tocsr() * (grid.hx * grid.hy)


def _second_difference(n_nodes: int, h: float) -> sp.csr_matrix:
    """1-D second difference; the end rows mirror the neighbour (zero normal derivative)."""
    upper, lower = np.ones(n_nodes - 1), np.ones(n_nodes - 1)
    upper[0] = lower[-1] = 2.0
    return sp.diags([lower, np.full(n_nodes, -2.0), upper], [-1, 0, 1], format="csr") / h**2


def laplacian_penalty(grid: Grid, *, boundary_rows: bool) -> sp.csr_matrix:
    """K with v . K v = sum_nodes (Laplacian_h v)^2 hx hy  ~  integral (Laplacian v)^2.

    The 5-point Laplacian is taken at the interior nodes; with ``boundary_rows`` (a unknown on
    the boundary too) also at the boundary nodes, with mirrored ghost values.
    """
    lap = sp.kron(sp.identity(grid.ny + 1), _second_difference(grid.nx + 1, grid.hx)) + sp.kron(
        _second_difference(grid.ny + 1, grid.hy), sp.identity(grid.nx + 1)
    )
    lap = lap.tocsr()
    if not boundary_rows:
        lap = lap[grid.interior_index]
    return (lap.T @ lap).tocsr() * (grid.hx * grid.hy)


# --- Coarse representations of unknown initial and boundary temperatures
@dataclass(frozen=True)
class CoarseField:
    """Node values = ``basis @ theta``; ``theta . penalty theta`` is its H1 seminorm."""

    basis: sp.csr_matrix
    penalty: sp.csr_matrix

    @property
    def size(self) -> int:
        return self.basis.shape[1]


@dataclass(frozen=True)
class TemperatureKnots:
    """Resolution of the coarse fields that stand for unknown initial and boundary temperatures."""

    cells: tuple[int, int]  # bilinear cells of u^0 in x and y
    perimeter: int  # knots of g around the boundary (periodic)
    levels: int  # knots of g in time

    @classmethod
    def for_grid(
        cls, nx: int, ny: int, n_steps: int, coarsening: tuple[int, int]
    ) -> TemperatureKnots:
        """Every ``coarsening[0]`` nodes in space and ``coarsening[1]`` levels in time, but at
        least MIN_KNOTS cells per direction (4 * MIN_KNOTS around the perimeter) where the
        grid has them: coarser fields cannot follow an ordinary initial or boundary state."""
        space, time_ = coarsening

        def count(n: int, step: int, least: int) -> int:
            return max(math.ceil(n / step), min(n, least))

        return cls(
            cells=(count(nx, space, MIN_KNOTS), count(ny, space, MIN_KNOTS)),
            perimeter=count(2 * (nx + ny), space, 4 * MIN_KNOTS),
            levels=count(n_steps, time_, MIN_KNOTS) + 1,
        )


def initial_field(grid: Grid, cells: tuple[int, int]) -> CoarseField:
    """u^0 at the interior nodes as a bilinear field on a coarse grid of ``cells``;
    penalty: integral |grad u^0|^2 over the rectangle."""
    coarse = Grid(grid.x, grid.y, *cells)
    basis = interpolation_matrix(coarse, None, grid.X[grid.interior], grid.Y[grid.interior])
    return CoarseField(basis, gradient_penalty(coarse))


def perimeter_coordinate(grid: Grid) -> np.ndarray:
    """Arc length of every boundary node (in ``grid.boundary_index`` order), counter-clockwise
    from the corner (x0, y0)."""
    (x0, x1), (y0, y1) = grid.x, grid.y
    X, Y = grid.X[grid.boundary], grid.Y[grid.boundary]
    width, height = x1 - x0, y1 - y0
    # Assign each node to one side; the sides meet at the corners, where the formulas agree.
    return np.select(
        [np.isclose(Y, y0) & (x1 > X), np.isclose(X, x1) & (y1 > Y), np.isclose(Y, y1) & (x0 < X)],
        [X - x0, width + (Y - y0), width + height + (x1 - X)],
        default=2 * width + height + (y1 - Y),
    )


def _linear_hat(values: np.ndarray, n_knots: int, length: float, periodic: bool) -> sp.csr_matrix:
    """Linear interpolation from n_knots uniform knots on [0, length] (periodic: the last knot
    is followed by the first) to the values."""
    h = length / (n_knots if periodic else n_knots - 1)
    s = values / h
    k = np.floor(s).astype(int)
    if not periodic:
        k = np.clip(k, 0, n_knots - 2)
    w = s - k
    rows = np.tile(np.arange(values.size), 2)
    cols = np.concatenate([k % n_knots, (k + 1) % n_knots])
    return sp.csr_matrix((np.concatenate([1 - w, w]), (rows, cols)), shape=(values.size, n_knots))


def boundary_field(
    grid: Grid, times: np.ndarray, knots: tuple[int, int], length_scale: float
) -> CoarseField:
    """g at every level and boundary node ((N + 1) * n_boundary, row-major) as a field linear
    between perimeter knots and between time knots; penalty: integral over the perimeter and
    [t0, t1] of g_s^2 + (T / L)^2 g_t^2 (T the time span, L the length scale)."""
    s = perimeter_coordinate(grid)
    perimeter = 2 * ((grid.x[1] - grid.x[0]) + (grid.y[1] - grid.y[0]))
    n_s, n_t = knots
    span = times[-1] - times[0]
    along = _linear_hat(s, n_s, perimeter, periodic=True)
    in_time = _linear_hat(times - times[0], n_t, span, periodic=False)

    ds, dt = perimeter / n_s, span / (n_t - 1)
    d_s = (sp.identity(n_s, format="csr") - sp.eye(n_s, k=1) - sp.eye(n_s, k=1 - n_s)) / ds
    d_t = _difference(n_t, dt)
    level_weight = np.full(n_t, dt)
    level_weight[[0, -1]] *= 0.5
    tau = span / length_scale
    penalty = sp.kron(sp.diags(level_weight), d_s.T @ d_s * ds) + tau**2 * sp.kron(
        d_t.T @ d_t * dt, sp.identity(n_s) * ds
    )
    return CoarseField(sp.kron(in_time, along).tocsr(), penalty.tocsr())


@dataclass
class InverseProblem:
    """The discrete inverse problem: parameter layout, forward map, misfit, penalties and the
    exact adjoint gradient. Build it with :meth:`build`; ``objective(m, weight)`` is what
    L-BFGS-B minimises.

    m = [a at the unknown nodes | theta_0 (coarse u^0) if unknown | theta_g (coarse g) if unknown].
    """

    grid: Grid
    times: np.ndarray
    H: sp.csr_matrix  # observation operator on the (N + 1, ny + 1, nx + 1) field
    data: np.ndarray
    sigma: np.ndarray
    f_interior: np.ndarray  # (N + 1, n_interior)
    a_fixed: np.ndarray  # full node field; holds the known boundary values
    a_unknown: np.ndarray  # flat node indices of the unknown values of a
    penalty_a: sp.csr_matrix  # R(a), normalised, on the full node vector of a
    u0_known: np.ndarray | None  # (n_interior,)
    g_known: np.ndarray | None  # (N + 1, n_boundary)
    u0_field: CoarseField | None  # its penalty is c_0 R_0, normalised
    g_field: CoarseField | None  # its penalty is c_g R_g, normalised
    scale: np.ndarray  # typical size of each parameter: a_ref for a, the data's spread for theta
    evaluations: int = 0
    last: dict = field(default_factory=dict)  # chi^2 and penalties at the last evaluation

    # ---- layout
    @property
    def n_a(self) -> int:
        return self.a_unknown.size

    @property
    def n_u0(self) -> int:
        return 0 if self.u0_field is None else self.u0_field.size

    @property
    def size(self) -> int:
        return self.n_a + self.n_u0 + (0 if self.g_field is None else self.g_field.size)

    def _blocks(self, m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return m[: self.n_a], m[self.n_a : self.n_a + self.n_u0], m[self.n_a + self.n_u0 :]

    def unpack(self, m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(a node field (ny + 1, nx + 1), u^0 interior, g (N + 1, n_boundary))."""
        m_a, theta_0, theta_g = self._blocks(m)
        a = self.a_fixed.copy().ravel()
        a[self.a_unknown] = m_a
        u0 = self.u0_known if self.u0_field is None else self.u0_field.basis @ theta_0
        if self.g_field is None:
            g = self.g_known
        else:
            g = (self.g_field.basis @ theta_g).reshape(self.times.size, -1)
        return a.reshape(self.grid.shape), u0, g

    # ---- forward map
    def forward(self, m: np.ndarray) -> tuple[CrankNicolson, np.ndarray]:
        """The step (with its LU) and the full node field (N + 1, n_nodes)."""
        a, u0, g = self.unpack(m)
        step = CrankNicolson.build(assemble(self.grid, a), self.times[1] - self.times[0])
        sources = self.f_interior + (step.operator.boundary @ g.T).T
        u = np.empty((self.times.size, a.size))
        u[:, self.grid.interior_index] = step.march(u0, sources)
        u[:, self.grid.boundary_index] = g
        return step, u

    def solution(self, m: np.ndarray) -> ForwardSolution:
        _, u = self.forward(m)
        return ForwardSolution(self.grid, self.times, u.reshape(self.times.size, *self.grid.shape))

    # ---- chi^2 and its exact discrete adjoint gradient
    def misfit(self, m: np.ndarray) -> tuple[float, np.ndarray]:
        """chi^2 and the gradient of chi^2 / 2 with respect to m."""
        self.evaluations += 1
        grid, dt = self.grid, self.times[1] - self.times[0]
        step, u = self.forward(m)
        residual = (self.H @ u.ravel() - self.data) / self.sigma
        q = (self.H.T @ (residual / self.sigma)).reshape(u.shape)
        q_interior = q[:, grid.interior_index]

        # Reverse sweep: lam[n] = lambda^n for n = 1..N (lam[0] stays zero).
        # With P^T = 2I - M^T: lambda^n = M^{-T} (q_I^n + 2 lambda^{n+1}) - lambda^{n+1}.
        lam = np.zeros_like(q_interior)
        lam[-1] = step.solve_transposed(q_interior[-1])
        for n in range(self.times.size - 2, 0, -1):
            lam[n] = step.solve_transposed(q_interior[n] + 2.0 * lam[n + 1]) - lam[n + 1]

        # a: dt/2 sum_n d/da [lambda^{n+1} . L(a) W^n], W^n = U^n + U^{n+1}, face by face
        lam_nodes = np.zeros((self.times.size - 1, *grid.shape))
        lam_nodes[:, grid.interior] = lam[1:]
        w = (u[:-1] + u[1:]).reshape(lam_nodes.shape)
        x_faces = (
            np.einsum("nji,nji->ji", np.diff(lam_nodes, axis=2), np.diff(w, axis=2)) / grid.hx**2
        )
        y_faces = (
            np.einsum("nji,nji->ji", np.diff(lam_nodes, axis=1), np.diff(w, axis=1)) / grid.hy**2
        )
        grad_a = np.zeros(grid.shape)  # each face mean hands half of its term to each node
        grad_a[:, :-1] += x_faces
        grad_a[:, 1:] += x_faces
        grad_a[:-1, :] += y_faces
        grad_a[1:, :] += y_faces
        grad = [-0.25 * dt * grad_a.ravel()[self.a_unknown]]

        if self.u0_field is not None:
            explicit_t_lam = lam[1] + 0.5 * dt * (step.operator.interior.T @ lam[1])  # P^T lambda^1
            grad.append(self.u0_field.basis.T @ (q_interior[0] + explicit_t_lam))
        if self.g_field is not None:
            lam_pairs = lam.copy()  # lambda^n + lambda^{n+1}, with lambda^0 = lambda^{N+1} = 0
            lam_pairs[:-1] += lam[1:]
            grad_g = (
                q[:, grid.boundary_index] + 0.5 * dt * (step.operator.boundary.T @ lam_pairs.T).T
            )
            grad.append(self.g_field.basis.T @ grad_g.ravel())
        return float(residual @ residual), np.concatenate(grad)

    # ---- smoothness penalty
    def penalty(self, m: np.ndarray) -> tuple[float, np.ndarray, dict]:
        """R(a) + c_0 R_0 + c_g R_g, its gradient, and the parts ``{"a": R(a), "temperature": ...}``."""
        _, theta_0, theta_g = self._blocks(m)
        a = self.unpack(m)[0].ravel()
        k_a = self.penalty_a @ a
        parts = {"a": float(a @ k_a), "temperature": 0.0}
        grad = [2.0 * k_a[self.a_unknown]]
        for theta, coarse in ((theta_0, self.u0_field), (theta_g, self.g_field)):
            if coarse is not None:
                k = coarse.penalty @ theta
                parts["temperature"] += float(theta @ k)
                grad.append(2.0 * k)
        return parts["a"] + parts["temperature"], np.concatenate(grad), parts

    def objective(self, m: np.ndarray, weight: float) -> tuple[float, np.ndarray]:
        """J = chi^2 / 2 + weight / 2 (R(a) + c_0 R_0 + c_g R_g) and its gradient."""
        chi2, grad_chi2 = self.misfit(m)
        r, grad_r, parts = self.penalty(m)
        self.last = {
            "chi2": chi2,
            "penalty_a": parts["a"],
            "penalty_temperature": parts["temperature"],
        }
        return 0.5 * chi2 + 0.5 * weight * r, grad_chi2 + 0.5 * weight * grad_r

    @classmethod
    def build(
        cls,
        observations: dict,
        domain: dict,
        *,
        source=None,
        boundary_diffusivity=None,
        initial_temperature=None,
        boundary_temperature=None,
        nx: int = 31,
        ny: int = 31,
        n_steps: int = 50,
        penalty: str = "laplacian",
        noise_sigma=None,
        bounds: tuple[float, float] = (0.01, 100.0),
        temperature_ratios: tuple[float, float] = (0.1, 100.0),
        temperature_knots: TemperatureKnots | None = None,
    ) -> tuple[InverseProblem, np.ndarray]:
        """The problem and a starting point m0 (a = a_ref, unknown temperatures the data mean)."""
        if penalty not in PENALTIES:
            raise ValueError(f"penalty must be one of {PENALTIES}, got {penalty!r}")
        grid = Grid(tuple(domain["x"]), tuple(domain["y"]), nx, ny)
        times = time_levels(tuple(domain["t"]), n_steps)
        x, y, t, u = (np.asarray(observations[k], dtype=float).ravel() for k in "xytu")
        sigma = observations.get("sigma")
        if sigma is None:  # like the spec's noise_sigma: used when the data carry no sigma
            sigma = noise_sigma if noise_sigma is not None else 1.0
        sigma = np.broadcast_to(np.asarray(sigma, dtype=float), u.shape).copy()
        if np.any(sigma <= 0):
            raise ValueError("noise sigma must be positive")

        interior, boundary = grid.interior, grid.boundary
        levels = times[:, None]
        knots = temperature_knots or TemperatureKnots.for_grid(
            nx, ny, n_steps, TEMPERATURE_COARSENING
        )
        f_interior = np.array(
            evaluate(
                source,
                (times.size, interior.sum()),
                x=grid.X[interior][None],
                y=grid.Y[interior][None],
                t=levels,
            )
        )
        area = (grid.x[1] - grid.x[0]) * (grid.y[1] - grid.y[0])
        length = math.sqrt(area)
        # The data's spread: the temperature scale of R_0, R_g and of the optimiser's variables.
        u_scale = float(np.std(u)) if u.size > 1 and np.std(u) > 0 else 1.0

        if boundary_diffusivity is not None:
            a_fixed = node_values(grid, boundary_diffusivity)
            a_ref = float(np.mean(a_fixed[boundary]))
            a_fixed[interior] = a_ref
            a_unknown = grid.interior_index
        else:
            a_ref = math.sqrt(max(bounds[0], 1e-3 * bounds[1]) * bounds[1])
            a_fixed = np.full(grid.shape, a_ref)
            a_unknown = np.arange(a_fixed.size)
        if penalty == "gradient":
            penalty_a = gradient_penalty(grid) * (length**2 / area / a_ref**2)
        else:
            penalty_a = laplacian_penalty(grid, boundary_rows=boundary_diffusivity is None)
            penalty_a = penalty_a * (length**4 / (2 * math.pi) ** 2 / area / a_ref**2)

        u0_known = u0_field = None
        if initial_temperature is not None:
            u0_known = node_values(grid, initial_temperature)[interior]
        else:
            coarse = initial_field(grid, knots.cells)
            scale = temperature_ratios[0] * length**2 / area / u_scale**2
            u0_field = CoarseField(coarse.basis, coarse.penalty * scale)
        g_known = g_field = None
        if boundary_temperature is not None:
            shape = (times.size, boundary.sum())
            g_known = np.array(
                evaluate(
                    boundary_temperature,
                    shape,
                    x=grid.X[boundary][None],
                    y=grid.Y[boundary][None],
                    t=levels,
                )
            )
        else:
            coarse = boundary_field(grid, times, (knots.perimeter, knots.levels), length)
            perimeter = 2 * ((grid.x[1] - grid.x[0]) + (grid.y[1] - grid.y[0]))
            scale = temperature_ratios[1] * length**2 / (perimeter * (times[-1] - times[0]))
            scale /= u_scale**2
            g_field = CoarseField(coarse.basis, coarse.penalty * scale)

        problem = cls(
            grid=grid,
            times=times,
            H=interpolation_matrix(grid, times, x, y, t),
            data=u,
            sigma=sigma,
            f_interior=f_interior,
            a_fixed=a_fixed,
            a_unknown=a_unknown,
            penalty_a=penalty_a,
            u0_known=u0_known,
            g_known=g_known,
            u0_field=u0_field,
            g_field=g_field,
            scale=np.empty(0),
        )
        problem.scale = np.full(problem.size, u_scale)
        problem.scale[: problem.n_a] = a_ref
        m0 = np.full(problem.size, float(np.mean(u)))  # unknown temperatures: the data's mean
        m0[: problem.n_a] = np.clip(a_ref, *bounds)
        return problem, m0


@dataclass
class InversionResult:
    """The fitted diffusivity (node values) and temperatures, and how they were found."""

    grid: Grid
    a_nodes: np.ndarray  # (ny + 1, nx + 1)
    solution: ForwardSolution  # fitted temperatures (with the estimated u^0 and g if unknown)
    penalty: str
    weight: float
    chi2: float
    n_observations: int
    iterations: int  # L-BFGS-B iterations over the whole weight search
    evaluations: int  # forward + adjoint solves
    wall_time: float  # seconds
    history: list[dict] = field(default_factory=list)  # one entry per weight tried

    @property
    def chi2_per_observation(self) -> float:
        return self.chi2 / self.n_observations

    def diffusivity(self, x, y) -> np.ndarray:
        """Bilinear interpolation of the fitted node values of a."""
        return bilinear(self.grid, self.a_nodes, x, y)

    def temperature(self, x, y, t) -> np.ndarray:
        """The fitted forward solution at scattered points (trilinear)."""
        return self.solution.at(x, y, t)


# The discrepancy search starts here (the penalties are dimensionless); the start changes how
# many fits the search needs, not where it ends.
SEARCH_START = 10.0
DISCREPANCY_TARGET = 1.0  # chi^2 / n of the discrepancy principle
STALL_WINDOW = 20  # iterations
MAX_ITERATIONS, STALL_TOLERANCE = 1000, 0.5  # of one L-BFGS-B fit (see _Fitter)


@dataclass
class _Log:
    """What the fits of one inversion share: their records and the running iteration count."""

    callback: Callable[[int, dict], None] | None
    history: list[dict] = field(default_factory=list)
    iterations: int = 0


@dataclass
class _Fitter:
    """L-BFGS-B fits of one problem at given weights, each recorded in ``history``.

    It works on z = m / scale (a in units of a_ref, temperatures in units of the data's
    spread): unscaled, the a and temperature blocks are badly balanced and L-BFGS-B needs 2-4x
    more iterations. A fit stops when J fell by less than ``stall_tolerance`` over the last
    STALL_WINDOW iterations, or after ``max_iterations``. J counts noise variances (chi^2 / 2),
    so the default 0.5 is a change of 1 in chi^2, against its statistical spread sqrt(2 n)
    (70 for 2500 observations): the fitted a no longer changes visibly by then.
    """

    problem: InverseProblem
    bounds: tuple[float, float]
    max_iterations: int
    stall_tolerance: float
    log: _Log

    def __call__(self, w: float, m_start: np.ndarray) -> dict:
        problem, scale = self.problem, self.problem.scale
        box = [(self.bounds[0] / s, self.bounds[1] / s) for s in scale[: problem.n_a]]
        box += [(None, None)] * (problem.size - problem.n_a)
        n_obs = problem.data.size
        objectives: list[float] = []

        def scaled_objective(z: np.ndarray) -> tuple[float, np.ndarray]:
            value, grad = problem.objective(z * scale, w)
            return value, grad * scale

        def on_iteration(intermediate_result) -> None:
            self.log.iterations += 1
            objectives.append(float(intermediate_result.fun))
            if self.log.callback is not None:
                metrics = {
                    "weight": w,
                    "objective": objectives[-1],
                    "chi2_per_observation": problem.last["chi2"] / n_obs,
                }
                self.log.callback(self.log.iterations, metrics)
            recent = objectives[-STALL_WINDOW - 1 :]
            if len(recent) > STALL_WINDOW and recent[0] - recent[-1] < self.stall_tolerance:
                raise StopIteration

        result = minimize(
            scaled_objective,
            m_start / scale,
            jac=True,
            method="L-BFGS-B",
            bounds=box,
            callback=on_iteration,
            options={"maxiter": self.max_iterations, "ftol": 1e-12, "gtol": 1e-9},
        )
        m = result.x * scale
        chi2, _ = problem.misfit(m)
        grid = problem.grid
        entry = {
            "grid": f"{grid.nx}x{grid.ny}x{problem.times.size - 1}",
            "weight": w,
            "chi2_per_observation": chi2 / n_obs,
            "iterations": len(objectives),
            "m": m,
        }
        self.log.history.append(entry)
        return entry


def prolong(coarse: InverseProblem, m: np.ndarray, fine: InverseProblem) -> np.ndarray:
    """A coarse-grid solution as a starting point on a finer grid of the same knots: a
    bilinearly interpolated (a convex combination, so the bounds still hold), the temperature
    knots unchanged."""
    a_coarse = coarse.unpack(m)[0]
    a_fine = bilinear(coarse.grid, a_coarse, fine.grid.X, fine.grid.Y).ravel()
    return np.concatenate([a_fine[fine.a_unknown], m[coarse.n_a :]])


def invert_diffusivity(
    observations: dict,
    *,
    domain: dict,
    source: Callable | None = None,
    boundary_diffusivity=None,
    initial_temperature=None,
    boundary_temperature=None,
    nx: int = 31,
    ny: int = 31,
    n_steps: int = 50,
    penalty: str = "laplacian",
    weight: str | float = "discrepancy",
    bounds: tuple[float, float] = (0.01, 100.0),
    noise_sigma=None,
    discrepancy_target: float = DISCREPANCY_TARGET,
    coarse_search: bool = True,
    temperature_ratios: tuple[float, float] = (0.1, 100.0),
    temperature_coarsening: tuple[int, int] = TEMPERATURE_COARSENING,
    max_iterations: int = MAX_ITERATIONS,
    stall_tolerance: float = STALL_TOLERANCE,
    callback: Callable[[int, dict], None] | None = None,
) -> InversionResult:
    """Fit node values of a(x, y) to temperature observations (see the module docstring).

    observations: arrays ``x, y, t, u`` and optionally ``sigma`` (scalar or per point);
    ``noise_sigma`` is used when they carry none. domain: ``{"x": (lo, hi), "y": (lo, hi), "t": (t0, t1)}``.
    source f(x, y, t), boundary_diffusivity a(x, y) on the boundary, initial_temperature
    u0(x, y), boundary_temperature g(x, y, t): callables or constants; None means zero
    source, or unknown (a on the boundary, u0 and g are then estimated with the rest).
    weight: a fixed Tikhonov weight w, or ``"discrepancy"`` (needs sigma): the largest w found
    with chi^2 / n <= ``discrepancy_target``. With ``coarse_search`` (and nx, ny >= 16) the
    weight is searched on a grid with half the cells and steps first, where a fit costs about
    a sixth; the search then finishes on the requested grid from the prolonged solution.
    bounds: (lo, hi) for every value of a. Each L-BFGS-B fit stops when J fell by less than
    ``stall_tolerance`` (J is in units of noise variances, chi^2 / 2) over the last 20
    iterations, or after ``max_iterations``. callback(iteration, metrics) is called after
    every L-BFGS-B iteration with the weight, the objective and chi^2 per observation.
    """
    start = time.perf_counter()
    if weight == "discrepancy" and noise_sigma is None and observations.get("sigma") is None:
        raise ValueError("the discrepancy principle needs the noise sigma")

    def build(nx: int, ny: int, n_steps: int) -> tuple[InverseProblem, np.ndarray]:
        return InverseProblem.build(
            observations,
            domain,
            source=source,
            boundary_diffusivity=boundary_diffusivity,
            initial_temperature=initial_temperature,
            boundary_temperature=boundary_temperature,
            nx=nx,
            ny=ny,
            n_steps=n_steps,
            penalty=penalty,
            noise_sigma=noise_sigma,
            bounds=bounds,
            temperature_ratios=temperature_ratios,
            temperature_knots=knots,
        )

    knots = TemperatureKnots.for_grid(nx, ny, n_steps, temperature_coarsening)
    problem, m0 = build(nx, ny, n_steps)
    log = _Log(callback)
    fine = _Fitter(problem, bounds, max_iterations, stall_tolerance, log)
    coarse = None
    if weight != "discrepancy":
        chosen = fine(float(weight), m0)
    else:
        reached = False
        if coarse_search and min(nx, ny) >= 16:
            coarse_problem, coarse_m0 = build(nx // 2, ny // 2, max(1, n_steps // 2))
            coarse = _Fitter(coarse_problem, bounds, max_iterations, stall_tolerance, log)
            found, reached = _discrepancy_search(
                coarse, coarse_m0, SEARCH_START, discrepancy_target
            )
        if reached:  # finish on the requested grid; chi^2 differs a little: small first steps
            first = fine(found["weight"], prolong(coarse_problem, found["m"], problem))
            chosen, reached = _discrepancy_search(
                fine, None, found["weight"], discrepancy_target, first=first, step=0.1
            )
        else:  # no coarse search, or its discretisation error hides the noise level
            chosen, reached = _discrepancy_search(fine, m0, SEARCH_START, discrepancy_target)
        if not reached:
            warnings.warn(
                f"discrepancy principle: chi^2/n = {chosen['chi2_per_observation']:.3f} could "
                f"not be brought to {discrepancy_target} (noise sigma too small, or model "
                f"error); using w = {chosen['weight']:.3g}",
                stacklevel=2,
            )

    m = chosen["m"]
    return InversionResult(
        grid=problem.grid,
        a_nodes=problem.unpack(m)[0],
        solution=problem.solution(m),
        penalty=penalty,
        weight=chosen["weight"],
        chi2=chosen["chi2_per_observation"] * problem.data.size,
        n_observations=problem.data.size,
        iterations=log.iterations,
        evaluations=problem.evaluations + (coarse.problem.evaluations if coarse else 0),
        wall_time=time.perf_counter() - start,
        history=[{k: v for k, v in h.items() if k != "m"} for h in log.history],
    )


def invert_spec(
    spec,
    observations,
    *,
    nx: int = 31,
    ny: int = 31,
    n_steps: int = 50,
    penalty: str = "laplacian",
    weight: str | float = "discrepancy",
    callback: Callable[[int, dict], None] | None = None,
) -> InversionResult:
    """:func:`invert_diffusivity` for a problem spec (:mod:`.spec`): its domain, source, known
    boundary values and diffusivity range. ``observations`` has arrays ``x, y, t, u`` and
    ``sigma`` (None: the spec's ``noise_sigma``)."""
    data, problem = _spec_problem(spec, observations)
    return invert_diffusivity(
        data, **problem, nx=nx, ny=ny, n_steps=n_steps, penalty=penalty, weight=weight,
        callback=callback,
    )


def solve_with_diffusivity(
    spec, diffusivity: Callable, observations, *, nx: int = 31, ny: int = 31, n_steps: int = 50
) -> ForwardSolution:
    """The forward solution, on the inversion's grid, for a given diffusivity a(x, y): what
    that a predicts through the solver the classical inversion uses, whatever model it came
    from. The initial and boundary temperatures are the spec's where it states them; where it
    does not, they are the inversion's coarse nuisance fields fitted to ``observations`` with a
    held fixed (same penalties, weight by the discrepancy principle), so that every a gets the
    same treatment as the classical fit's own."""
    data, known = _spec_problem(spec, observations)
    problem, m0 = InverseProblem.build(data, **known, nx=nx, ny=ny, n_steps=n_steps)
    grid = problem.grid
    a = np.clip(np.asarray(diffusivity(grid.X, grid.Y), dtype=float), *known["bounds"])
    temperatures = slice(problem.n_a, problem.size)
    problem.a_fixed = np.broadcast_to(a, grid.shape).copy()
    problem.a_unknown = np.empty(0, dtype=int)
    problem.scale, m0 = problem.scale[temperatures], m0[temperatures]
    if problem.size == 0:  # the spec states both temperatures: one forward solve
        return problem.solution(np.empty(0))
    fit = _Fitter(problem, known["bounds"], MAX_ITERATIONS, STALL_TOLERANCE, _Log(None))
    chosen, _ = _discrepancy_search(fit, m0, SEARCH_START, DISCREPANCY_TARGET)
    return problem.solution(chosen["m"])


def _spec_problem(spec, observations) -> tuple[dict, dict]:
    """The observations as the inversion takes them, and what the spec states of the problem."""
    data = {"x": observations.x, "y": observations.y, "t": observations.t,
            "u": observations.u, "sigma": observations.sigma}
    return data, {
        "domain": spec.domain.bounds(),
        "source": spec.source,
        "boundary_diffusivity": spec.boundary_diffusivity,
        "initial_temperature": spec.initial_temperature,
        "boundary_temperature": spec.boundary_temperature,
        "bounds": spec.diffusivity_range or (0.01, 100.0),
        "noise_sigma": spec.noise_sigma,
    }


def _discrepancy_search(
    fit: Callable[[float, np.ndarray], dict],
    m0: np.ndarray | None,
    w_start: float,
    target: float,
    *,
    first: dict | None = None,
    step: float = 0.5,
    refinements: int = 3,
    tolerance: float = 0.01,
) -> tuple[dict, bool]:
    """Morozov's discrepancy principle: the largest w with chi^2 / n <= target.

    chi^2(w) grows with w. Walk from ``w_start`` (``first``: a fit there already done, then
    m0 is not used) in steps of ``step`` decades, doubling up to one decade, until a fit lands
    within ``tolerance`` below the target or chi^2 / n crosses it (each fit warm-started from
    the previous one); then refine the bracket by the secant rule on log(chi^2 / n) versus
    log10(w). Returns the fit with the largest w whose chi^2 / n <= target and whether the
    target was met; it is not when chi^2 stops falling as w falls (noise sigma too small, or
    model error: then the last fit before the stall) or in 12 steps.
    """

    def good(entry: dict) -> bool:
        return target - tolerance <= entry["chi2_per_observation"] <= target

    entry = first if first is not None else fit(w_start, m0)
    below = above = None  # nearest fits with chi^2 / n <= target and > target
    direction = 1.0 if entry["chi2_per_observation"] <= target else -1.0
    for _ in range(12):
        if good(entry):
            return entry, True
        if entry["chi2_per_observation"] <= target:
            below = entry
        else:
            above = entry
        if below is not None and above is not None:
            break
        previous, entry = entry, fit(entry["weight"] * 10.0 ** (direction * step), entry["m"])
        step = min(2.0 * step, 1.0)
        if (
            direction < 0
            and entry["chi2_per_observation"] > 0.995 * previous["chi2_per_observation"]
        ):
            return previous, False
    if below is None or above is None:
        return (below if below is not None else entry), False

    for _ in range(refinements):
        x0, x1 = np.log10(below["weight"]), np.log10(above["weight"])
        y0, y1 = (np.log(e["chi2_per_observation"] / target) for e in (below, above))
        log_w = x0 - y0 * (x1 - x0) / (y1 - y0)
        log_w = float(np.clip(log_w, x0 + 0.1 * (x1 - x0), x1 - 0.1 * (x1 - x0)))
        nearer = below if log_w - x0 < x1 - log_w else above
        entry = fit(10.0**log_w, nearer["m"])
        if good(entry):
            return entry, True
        if entry["chi2_per_observation"] <= target:
            below = entry
        else:
            above = entry
    return below, True
