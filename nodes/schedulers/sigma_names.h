// The names ComfyUI's sampling conventions know (sigmas.h computes them), torch-free for the
// workflow importer.
#pragma once

#include <string>
#include <vector>

namespace sd {

std::vector<std::string>
SigmaSchedulerNames();  // normal, karras, exponential, simple, ddim_uniform, sgm_uniform
std::vector<std::string> SigmaSamplerNames();  // euler, euler_ancestral, dpmpp_2m, ddim, ddpm

}  // namespace sd
