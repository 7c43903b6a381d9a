#include "host_plugin/cli/generate_help.h"

#include "absl/strings/str_cat.h"

namespace sd::cli {

namespace {

constexpr char kCommonFlags[] =
    "  --model M         SD v1.x checkpoint (.safetensors or .ckpt); default: the demo model\n"
    "                    (deploy/models/sd-demo-shapes.safetensors: 64x64 flat shapes, not Stable "
    "Diffusion)\n"
    "  --vae FILE        a standalone VAE (CompVis layout, e.g. vae-ft-mse-840000-ema) instead of "
    "the\n"
    "                    checkpoint's; with --workers, a name in their repositories\n"
    "  --lora NAME[:UNET[:TEXT]]  apply a LoRA (kohya, diffusers/PEFT or LDM keys; LoCon) with "
    "these\n"
    "                    strengths (default 1; one number: both); repeatable. A prompt's "
    "<lora:NAME:W> tag\n"
    "                    does the same (<lora:NAME:TE:UNET>). NAME is a file, or a name in "
    "--lora-dir or\n"
    "                    the model's folder; with --workers, a name in their repositories\n"
    "  --lora-dir DIR    where LoRAs named without a path are found\n"
    "  --strict-lora     a LoRA key that patches no layer of the model is an error (default: a "
    "warning)\n"
    "  --tokenizer DIR   CLIP vocab.json + merges.txt (default: the copy shipped with sd-graph)\n"
    "  --embeddings DIR  textual-inversion embeddings (.pt, .safetensors, .bin): a prompt word "
    "equal to a\n"
    "                    file's name (style.pt: \"style\") becomes its vectors\n"
    "  --dtype D         f32 (default, the reference's numbers) or bf16: weights held in bfloat16, "
    "half "
    "the\n"
    "                    memory, slightly different images. On a CPU without AMX, bf16 weights "
    "compute in\n"
    "                    fp32 (faster there than bf16 arithmetic; SD_CPU_BF16=native|f32 "
    "overrides).\n"
    "                    q8: f32, with the UNet's 3x3 convolutions and, on CPUs with VNNI, its\n"
    "                    feed-forward projections in int8 on a CPU (about 1.5x faster steps on "
    "AVX-512\n"
    "                    VNNI CPUs, slightly different images; an int8 checkpoint from\n"
    "                    `sd-graph convert --dtype q8` computes this way whatever D is)\n"
    "  --threads N       CPU threads (default: all cores)\n"
    "  --cfg-batch M     on: the cond and uncond UNet calls of a guided step run as one batch-2 "
    "call\n"
    "                    where one process runs both (here, or a worker running the whole loop); "
    "off:\n"
    "                    two calls; auto: one batch on CUDA, two calls on a CPU (where the images "
    "are\n"
    "                    then the distributed runs' bytes exactly). Default: the graph's "
    "`cfg_batch:`\n"
    "  -o, --output OUT  image to write (.png, .jpg, .tif, .exr, ...); with --batch N > 1, "
    "OUT-1.png ...\n"
    "  --dump NODE.PORT=FILE.safetensors   also write an intermediate tensor (repeatable)\n"
    "  --stats FILE      after a successful run, write JSON with the images made, the seconds "
    "taken and\n"
    "                    this process's peak resident memory (peak_rss_bytes)\n";

constexpr char kWorkerFlags[] =
    "\nDistributed (node calls on sd-worker processes; the same graph, the same image in f32):\n"
    "  --workers LIST    HOST:PORT,HOST:PORT,... or dns:///SERVICE:PORT (a Kubernetes headless "
    "service:\n"
    "                    every address it resolves to is a worker; dns://SERVER/NAME:PORT asks "
    "that "
    "DNS server);\n"
    "                    --model is then a model name in the workers' repositories\n"
    "  --parallel N      with --batch: images in flight at once (default: one per worker)\n"
    "  --placement P     where each denoising loop runs: nodes (every model call of every step "
    "on the\n"
    "                    least busy worker, the CFG halves of a step on two at once), or worker "
    "(the\n"
    "                    whole loop as one request to one worker, which streams its progress "
    "back:\n"
    "                    for a GPU worker); default: what the graph says (`placement:`), else "
    "nodes\n"
    "  --loop-workers LIST   workers that take the loops placed on one worker (the same model "
    "file; "
    "implies\n"
    "                    --placement worker): e.g. a GPU box for the loops, --workers CPU boxes "
    "for "
    "the rest\n"
    "  --token-file F    bearer token for the workers (first line of F; or set SD_WORKER_TOKEN)\n"
    "  --tls-ca F        use TLS, trusting this CA (PEM)\n"
    "  --tls-cert F --tls-key F   client certificate for mutual TLS\n"
    "  --tls-server-name NAME     the name in the workers' certificates, when it is not the host "
    "name\n"
    "  --require-tls     refuse plaintext connections to workers (without it, a token sent in "
    "plaintext\n"
    "                    gets a warning)\n"
    "  --wire-dtype D    f32 (default), f16 or bf16: activations on the wire (half the bytes; not "
    "bit-exact)\n"
    "  --call-timeout S  deadline of one node call in seconds (default 600); late calls are "
    "retried elsewhere\n"
    "  --max-attempts N  workers one call may fail on before the run gives up (default 3); a busy "
    "worker\n"
    "                    (full queue) is waited for with backoff and does not count\n"
    "  --max-message-mb N   largest request or response (default 64, as sd-worker's)\n";

constexpr char kPromptFlags[] =
    "  --prompt TEXT     what to draw\n"
    "  --negative TEXT   what to steer away from (default: empty)\n"
    "  --steps N         sampler steps (default 50)\n"
    "  --cfg S           classifier-free guidance scale (default 7.5)\n"
    "  --seed N          seed of the torch CPU generator; same seed, same image as the reference "
    "(default 0)\n"
    "  --sampler NAME    ddpm (the reference's sampler; the default), ddim, euler, euler_a, "
    "dpmpp_2m\n"
    "  --karras          Karras sigma spacing (euler, euler_a, dpmpp_2m)\n"
    "  --eta E           DDIM's eta (default 0: deterministic)\n"
    "  --batch N         N images, seeds SEED, SEED+1, ... (default 1)\n"
    "  --weighting W     prompt weighting syntax: a1111 (default: (word) x1.1, [word] /1.1,\n"
    "                    (word:1.3) multiplies), comfy ((word:1.3) replaces the outer weight, [ ] "
    "are text)\n"
    "                    or none. Prompts of any length are encoded in 75-token chunks; BREAK "
    "starts one\n"
    "  --clip-skip N     1 (default): CLIP's last layer; 2: the layer before it (as other tools)\n";

constexpr char kControlNetFlags[] =
    "\nControlNet (graphs/txt2img_controlnet.pbtxt, img2img_controlnet.pbtxt; SD v1.x ControlNets "
    "in the\n"
    "original .pth/.safetensors layout, with or without control_model., or diffusers' "
    "ControlNetModel):\n"
    "  --controlnet FILE steer with this ControlNet (repeatable: their residuals add up); with "
    "--workers,\n"
    "                    a name in their repositories; sd-demo-shapes-canny.safetensors is the "
    "demo\n"
    "                    model's own (Canny edges: use --hint-pass canny)\n"
    "  --hint IMAGE      its hint picture, one per --controlnet (edges, pose, depth, normals), "
    "fitted to\n"
    "                    the working size (centre-cropped; --set hint_crop=disabled stretches)\n"
    "  --hint-pass P     image (default: the picture as is), canny (its Canny edges, OpenCV;\n"
    "                    thresholds --canny-low L --canny-high H, default 100 and 200), depth (a\n"
    "                    float pass of distances, EXR or 16-bit PNG: near = white, normalised to "
    "the\n"
    "                    nearest and farthest finite values)\n"
    "                    or normal (unit normals in [-1, 1] -> RGB (n + 1) / 2)\n"
    "  --control-strength S  scale of its residuals (default 1); once for all, or once per "
    "--controlnet\n"
    "  --control-start A --control-end B  the part of the denoising it acts in, 0 to 1 (default 0, "
    "1)\n"
    "  --control-cond-only   steer the conditional half only (\"my prompt is more important\")\n"
    "  --guess-mode      the original guess mode: conditional half only, deeper residuals weaker\n"
    "                    (0.825^(12 - i)); \"ControlNet is more important\"\n";

std::string RunHelp() {
  return absl::StrCat(
      "usage: sd-graph run GRAPH.pbtxt|WORKFLOW.json|IMAGE.png [--model M] [--set NAME=VALUE ...] "
      "-o OUT "
      "[flags]\n\n"
      "Runs a graph file in-process. --set gives a graph input: text, a number, or a tensor from a "
      "file as\n"
      "@FILE.safetensors:KEY. The graph's first output must be an image (uint8 [H, W, 3]).\n"
      "A ComfyUI workflow (API format .json, or a PNG ComfyUI saved) runs directly: see\n"
      "`sd-graph import-comfy --help` for what it becomes and its inputs' names.\n\n",
      kCommonFlags, kWorkerFlags, kControlNetFlags,
      "  --set NAME=VALUE  a graph input (repeatable); in farm mode {frame} in VALUE is the frame "
      "number\n"
      "  --seed N          the graph's `seed` input (farm mode: N + frame)\n"
      "  --comfy-models DIR  ComfyUI's models folder: a workflow's checkpoint, VAE and LoRAs are\n"
      "                    found in DIR/checkpoints, DIR/vae, DIR/loras (else beside the "
      "workflow)\n"
      "  --input-dir DIR   where a workflow's LoadImage files are (default: the workflow's "
      "folder)\n"
      "\n"
      "Render-farm mode:\n"
      "  --frames A-B[:S] render frames A to B (every S-th); OUT is a pattern such as "
      "out/frame_%04d.png;\n"
      "                  each frame's seed is SEED + frame; frames whose file exists are skipped\n"
      "  --overwrite       render existing frames again\n"
      "  Progress is printed as flushed lines farm managers read (openjd_progress: NN, "
      "openjd_status: ...,\n"
      "  Progress: NN%). Exit codes: 0 done; 2 bad arguments or graph, 3 missing model or input "
      "file\n"
      "  (permanent: do not retry); 75 workers unavailable or timed out (retry); 130 cancelled "
      "(SIGTERM or\n"
      "  SIGINT: the frame in progress is abandoned, no partial file is left); 1 other "
      "failures.\n");
}

std::string Txt2ImgHelp() {
  return absl::StrCat(
      "usage: sd-graph txt2img [--model M] --prompt TEXT -o OUT [flags]\n\n"
      "Text to image with the stock graph graphs/txt2img.pbtxt.\n\n",
      kCommonFlags, kPromptFlags, kWorkerFlags,
      "  --width W         pixels, a multiple of 64 (default: the model's native size; 512 for SD "
      "v1.x)\n"
      "  --height H        pixels, a multiple of 64 (default: the model's native size; 512 for SD "
      "v1.x)\n"
      "\n"
      "Hires fix (graphs/hires_fix.pbtxt): draw at W x H, then upscale the latents and repaint:\n"
      "  --hires-scale S   how much larger (1 to 8; W x S and H x S must be multiples of 64)\n"
      "  --hires-denoise D how much the second pass repaints, (0, 1] (default 0.5)\n"
      "  --hires-steps N   the second pass's steps at full strength (default: --steps)\n"
      "  --hires-upscaler M  nearest-exact, bilinear (default), bicubic or area\n",
      kControlNetFlags);
}

std::string Img2ImgHelp() {
  return absl::StrCat(
      "usage: sd-graph img2img [--model M] --init IMG --prompt TEXT -o OUT [flags]\n\n"
      "Image to image with the stock graph graphs/img2img.pbtxt, at the input's size or at\n"
      "--width x --height (multiples of 64).\n\n",
      kCommonFlags, kPromptFlags, kWorkerFlags,
      "  --init IMG        the input image\n"
      "  --strength S      in (0, 1]: how much to repaint (default 0.8)\n"
      "  --width W         work at this width, resizing the input (default: the input's)\n"
      "  --height H        work at this height, resizing the input (default: the input's)\n",
      kControlNetFlags);
}

std::string InpaintHelp() {
  return absl::StrCat(
      "usage: sd-graph inpaint [--model M] --init IMG --mask MASK --prompt TEXT -o OUT [flags]\n\n"
      "Repaints the white region of MASK (same size as IMG). With an ordinary checkpoint it runs\n"
      "graphs/inpaint.pbtxt (the mask-blend method); with a 9-channel inpainting checkpoint,\n"
      "graphs/inpaint9.pbtxt. Sizes must be multiples of 64 pixels. With no --model it runs the\n"
      "demo model's inpainting variant (sd-demo-shapes-inpainting.safetensors, 9 channels),\n"
      "which draws what the prompt says inside the mask and keeps what is outside.\n\n",
      kCommonFlags, kPromptFlags, kWorkerFlags,
      "  --init IMG        the image\n"
      "  --mask MASK       white = repaint, black = keep\n"
      "  --width W         work at this width, resizing image and mask (default: the image's)\n"
      "  --height H        work at this height, resizing image and mask (default: the image's)\n"
      "  --strength S      in (0, 1], ordinary checkpoints only (default 1)\n");
}

}  // namespace

std::string GenerateHelp(Mode mode) {
  switch (mode) {
    case Mode::kRun:
      return RunHelp();
    case Mode::kTxt2Img:
      return Txt2ImgHelp();
    case Mode::kImg2Img:
      return Img2ImgHelp();
    case Mode::kInpaint:
      return InpaintHelp();
  }
  return "";
}

}  // namespace sd::cli
