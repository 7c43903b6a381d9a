#include "nodes/schedulers/sigma_names.h"

namespace sd {

std::vector<std::string> SigmaSchedulerNames() {
  return {"normal", "karras", "exponential", "simple", "ddim_uniform", "sgm_uniform"};
}
std::vector<std::string> SigmaSamplerNames() {
  return {"euler", "euler_ancestral", "dpmpp_2m", "ddim", "ddpm"};
}

}  // namespace sd
