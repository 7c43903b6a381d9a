// What `sd-graph --help` prints (shared by the light front and the engine).
#pragma once

#include <cstdio>
#include <cstring>
#include <optional>

namespace sd::cli {

inline constexpr char kSdGraphUsage[] =
    "sd-graph: Stable Diffusion v1.x as a graph of nodes\n"
    "\n"
    "usage: sd-graph COMMAND [ARGS...]   (sd-graph COMMAND --help for its flags)\n"
    "\n"
    "commands:\n"
    "  txt2img --model M --prompt TEXT -o OUT  text to image (the stock graph "
    "graphs/txt2img.pbtxt)\n"
    "  img2img --model M --init IMG --prompt TEXT -o OUT\n"
    "                                          image to image (graphs/img2img.pbtxt)\n"
    "  inpaint --model M --init IMG --mask MASK --prompt TEXT -o OUT\n"
    "                                          repaint the white region of MASK "
    "(graphs/inpaint*.pbtxt)\n"
    "  run GRAPH --model M [--set K=V] -o OUT  run any graph file (or a ComfyUI workflow: .json, "
    "or\n"
    "                                          the .png ComfyUI saved)\n"
    "  import-comfy WORKFLOW -o GRAPH.pbtxt    a ComfyUI workflow (API format, or its PNG) as a "
    "graph file\n"
    "  export-comfy GRAPH -o WORKFLOW.json     a graph of ComfyUI-equivalent kinds as a ComfyUI "
    "workflow\n"
    "  tokenize [--tokenizer DIR] TEXT...      print the 77 CLIP token ids of each TEXT as a JSON "
    "array\n"
    "  kinds [KIND...] [--textproto]           the node kinds graph files can use, with their "
    "ports\n"
    "  cpu [--measure] [--forget] [--json]     this CPU, its kernels and what its measurements "
    "chose\n"
    "  inspect MODEL [--json]                  format, dtype, detected config, hash and key check "
    "of a\n"
    "                                          .safetensors or .ckpt checkpoint\n"
    "  convert IN OUT.safetensors [--dtype D]  re-save any supported checkpoint as safetensors\n"
    "  make-test-checkpoint OUT.safetensors    write a checkpoint of deterministic test weights\n"
    "                                          (sdgold-v1; full SD v1.5 size or --tiny): images "
    "are noise\n";

// `sd-graph`, `sd-graph --help|-h|help`: prints the usage (to stderr without a command) and
// returns the exit code (2 without a command, else 0); nullopt when there is a command to run.
inline std::optional<int> AnswerTopLevelHelp(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "--help") && std::strcmp(argv[1], "-h") &&
      std::strcmp(argv[1], "help"))
    return std::nullopt;
  std::fputs(kSdGraphUsage, argc < 2 ? stderr : stdout);
  return argc < 2 ? 2 : 0;
}

}  // namespace sd::cli
