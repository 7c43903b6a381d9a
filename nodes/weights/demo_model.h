// The project's demo model: SD v1.x's architecture at small widths, trained by sd-train on drawn
// shapes and shipped in the repository (deploy/models/), so that a machine without downloaded
// weights makes pictures that match their prompts. Front ends use it when no model is named, and
// size images by the native size a model declares in its metadata.
#pragma once

#include <map>
#include <optional>
#include <string>

namespace sd {

inline constexpr char kDemoModelFile[] = "sd-demo-shapes.safetensors";
// Its ControlNet, trained by sd-train-controlnet: the Canny edges of a picture as the hint.
inline constexpr char kDemoControlNetFile[] = "sd-demo-shapes-canny.safetensors";
// Its inpainting variant, made by sd-train-inpaint: a 9-channel UNet that also reads the mask and
// the masked picture (graphs/inpaint9.pbtxt). `sd-graph inpaint` runs it when no model is named.
inline constexpr char kDemoInpaintModelFile[] = "sd-demo-shapes-inpainting.safetensors";
inline constexpr char kNativeSizeKey[] = "sdgraph.native_size";
inline constexpr int kSd1NativeSize = 512;

// Where the demo model is: $SDGRAPH_DEMO_MODEL, then next to `anchor_dir` (the folder of the binary
// or plugin running: <anchor>/../share/sdgraph/models/ or <anchor>/../../share/..., as the GEGL
// plugin is installed in lib/gegl-0.4), then <executable>/../share/sdgraph/models/, then the source
// tree's deploy/models/. "" when none of them is readable.
std::string DemoModelPath(const std::string& anchor_dir = "");

// Where the demo inpainting model is: $SDGRAPH_DEMO_INPAINT_MODEL; else, when $SDGRAPH_DEMO_MODEL
// names another demo model, that one (an inpainting model made from a different model would not
// match it); else next to `anchor_dir` or installed as DemoModelPath looks. "" when none is.
std::string DemoInpaintModelPath(const std::string& anchor_dir = "");

// The model a front end runs when the user names none: on workers, the demo model by the file name
// their repositories serve it under; in-process, DemoModelPath(anchor_dir) ("" when not installed:
// the front end then says how to name one). For `inpainting`, the demo inpainting model (its file
// name on workers; in-process DemoInpaintModelPath, else DemoModelPath).
std::string DefaultModel(bool on_workers, const std::string& anchor_dir = "",
                         bool inpainting = false);

// Where shipped file `file` (kDemoModelFile, kDemoControlNetFile, kDemoInpaintModelFile) is:
// <executable>/../share/sdgraph/models/, then the source tree's deploy/models/; "" when neither
// is readable.
std::string ShippedModelPath(const std::string& file);

// The path of the shipped model `name` names (its file name, with or without ".safetensors");
// "" when it names none or that one is not installed.
std::string ShippedPathOf(const std::string& name);

// `name` as a user wrote it: a readable file stays itself; else the shipped model it names, if
// any; else `name` (for the caller to report).
std::string ResolveShippedName(const std::string& name);

// The side in pixels a model was trained at, from safetensors metadata "sdgraph.native_size" (a
// multiple of 8 from 8 to 8192); nullopt when absent or malformed.
std::optional<int> NativeSize(const std::map<std::string, std::string>& metadata);

}  // namespace sd
