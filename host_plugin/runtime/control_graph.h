// More ControlNets in a graph made for one (the stock txt2img_controlnet / img2img_controlnet): for
// K = 1..extra, a copy of the hint node (`hint_K`, reading graph inputs hint_K / hint_values_K) and
// of each ControlNet node of the loop (`control_cond_K`, model index K, strength/start/end from
// control_strength_K / control_start_K / control_end_K), chained after the previous one through its
// `residuals` input; the UNet steps then read the last of each chain. The other hint settings
// (normalize, resize, crop, guess mode, control_uncond) are shared.
//
//   SD_ASSIGN_OR_RETURN(std::string text, AddControlNets(ReadFile(stock), 1));
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace sd {

// INVALID_ARGUMENT when the graph has no ControlHint node named "hint" or no ControlNet nodes.
absl::StatusOr<std::string> AddControlNets(const std::string& graph_text, int extra);

}  // namespace sd
