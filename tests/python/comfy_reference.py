#!/usr/bin/env python3
"""An independent reference for sdgraph's ComfyUI sampling conventions, written the way ComfyUI and
k-diffusion write them (variance-exploding latents, a model wrapper returning `denoised`, sigmas as
float32 tensors), not as a port of our C++.

  comfy_reference.py CASES.json OUT.safetensors
      CASES: [{"name", "scheduler", "sampler", "steps", "denoise", "start", "end", "full", "add_noise",
               "seed"}, ...]
      OUT: "<name>.sigmas" (float32 [N + 1]) and "<name>.x" (the sampled latents, float32 [1, 4, 8, 8])
      for each case, sampling from seeded noise with the toy model eps(x_vp, t) = 0.5 x_vp + t / 1000
      evaluated at ComfyUI's timestep of each sigma.
"""
import json
import math
import sys

import torch

from safetensors_io import save


class ModelSampling:
    """ComfyUI's ModelSamplingDiscrete for SD v1.x (scaled-linear betas, 1000 steps)."""

    def __init__(self):
        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        self.sigmas = sigmas.float()
        self.log_sigmas = sigmas.log().float()
        self.sigma_min, self.sigma_max = self.sigmas[0], self.sigmas[-1]

    def timestep(self, sigma):
        dists = sigma.log() - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape)

    def sigma(self, t):
        t = torch.clamp(t.float(), min=0, max=len(self.sigmas) - 1)
        low, high = t.floor().long(), t.ceil().long()
        w = t.frac()
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()


def scheduler_sigmas(s, name, steps):
    if name in ("normal", "sgm_uniform"):
        start, end = s.timestep(s.sigma_max), s.timestep(s.sigma_min)
        ts = torch.linspace(start, end, steps + 1)[:-1] if name == "sgm_uniform" else torch.linspace(start, end, steps)
        return torch.FloatTensor([float(s.sigma(t)) for t in ts] + [0.0])
    if name == "karras":
        rho = 7.0
        ramp = torch.linspace(0, 1, steps)
        lo, hi = float(s.sigma_min) ** (1 / rho), float(s.sigma_max) ** (1 / rho)
        return torch.cat([(hi + ramp * (lo - hi)) ** rho, torch.zeros(1)])
    if name == "exponential":
        return torch.cat([torch.linspace(math.log(s.sigma_max), math.log(s.sigma_min), steps).exp(), torch.zeros(1)])
    if name == "simple":
        ss = len(s.sigmas) / steps
        return torch.FloatTensor([float(s.sigmas[-(1 + int(x * ss))]) for x in range(steps)] + [0.0])
    if name == "ddim_uniform":
        sigs, x, ss = [0.0], 1, max(len(s.sigmas) // steps, 1)
        while x < len(s.sigmas):
            sigs.append(float(s.sigmas[x]))
            x += ss
        return torch.FloatTensor(sigs[::-1])
    raise ValueError(name)


def ksampler_sigmas(s, case):
    steps, denoise = case["steps"], case.get("denoise", 1.0)
    if denoise > 0.9999:
        sigmas = scheduler_sigmas(s, case["scheduler"], steps)
    else:
        sigmas = scheduler_sigmas(s, case["scheduler"], int(steps / denoise))[-(steps + 1):]
    last, start = case.get("end"), case.get("start")
    if last is not None and last < len(sigmas) - 1:
        sigmas = sigmas[: last + 1]
        if case.get("full"):
            sigmas[-1] = 0
    if start is not None:
        sigmas = sigmas[start:]
    return sigmas


def sample(s, case, sigmas):
    gen = torch.Generator().manual_seed(case["seed"])
    noise = torch.randn((1, 4, 8, 8), generator=gen)
    latent = torch.linspace(-1, 1, 256).reshape(1, 4, 8, 8)  # the image being denoised (img2img-like)
    if case.get("start") or case.get("denoise", 1.0) <= 0.9999:
        x = latent
    else:
        x = torch.zeros_like(latent)
    s0 = float(sigmas[0])
    max_denoise = math.isclose(float(s.sigma_max), s0, rel_tol=1e-05) or s0 > float(s.sigma_max)
    if case.get("add_noise", True):
        x = x + noise * (math.sqrt(1.0 + s0 ** 2) if max_denoise else s0)
    step_gen = torch.Generator().manual_seed(case["seed"])
    noise_sampler = lambda: torch.randn(x.size(), generator=step_gen)

    def model(x, sigma):  # ComfyUI's EPS wrapper around the toy model
        t = float(s.timestep(torch.tensor(sigma)))
        x_vp = x / math.sqrt(sigma ** 2 + 1)
        eps = 0.5 * x_vp + t / 1000
        return x - eps * sigma

    name, old = case["sampler"], None
    for i in range(len(sigmas) - 1):
        sig, nxt = float(sigmas[i]), float(sigmas[i + 1])
        denoised = model(x, sig)
        if name in ("euler", "ddim"):
            x = x + (x - denoised) / sig * (nxt - sig)
        elif name == "euler_ancestral":
            up = min(nxt, (nxt ** 2 * (sig ** 2 - nxt ** 2) / sig ** 2) ** 0.5)
            down = (nxt ** 2 - up ** 2) ** 0.5
            x = x + (x - denoised) / sig * (down - sig)
            if nxt > 0:
                x = x + noise_sampler() * up
        elif name == "dpmpp_2m":
            t, t_next = -math.log(sig), (-math.log(nxt) if nxt > 0 else math.inf)
            h = t_next - t
            if old is None or nxt == 0:
                x = (nxt / sig) * x - math.expm1(-h) * denoised
            else:
                r = (t - (-math.log(float(sigmas[i - 1])))) / h
                x = (nxt / sig) * x - math.expm1(-h) * ((1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old)
            old = denoised
        elif name == "ddpm":  # k-diffusion's DDPM step on the variance-preserving latents
            x_vp, eps = x / math.sqrt(1.0 + sig ** 2), (x - denoised) / sig
            a, a_prev = 1 / (sig ** 2 + 1), 1 / (nxt ** 2 + 1)
            alpha = a / a_prev
            mu = (1.0 / alpha) ** 0.5 * (x_vp - (1 - alpha) * eps / (1 - a) ** 0.5)
            if nxt > 0:
                mu = mu + ((1 - alpha) * (1.0 - a_prev) / (1.0 - a)) ** 0.5 * noise_sampler()
                mu = mu * math.sqrt(1.0 + nxt ** 2)
            x = mu
        else:
            raise ValueError(name)
    return x


def main():
    cases = json.load(open(sys.argv[1]))
    s, out = ModelSampling(), {}
    for case in cases:
        sigmas = ksampler_sigmas(s, case)
        out[case["name"] + ".sigmas"] = sigmas.float()
        out[case["name"] + ".x"] = sample(s, case, sigmas).float()
    save(sys.argv[2], out)


if __name__ == "__main__":
    main()
