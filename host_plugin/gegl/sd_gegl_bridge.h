/* The C interface between the GEGL operations (C, GObject) and the sdgraph runtime (C++). The operations
 * gather their properties and input pixels into an SdGeglRequest; sd_gegl_run runs the graph file (a stock
 * graph by default) in-process or on workers and returns RGBA float pixels. */
#ifndef SDGRAPH_GEGL_BRIDGE_H
#define SDGRAPH_GEGL_BRIDGE_H

#ifdef __cplusplus
extern "C" {
#endif

typedef void (*SdGeglProgress)(void* user, double fraction, const char* message);

typedef struct {
  const char* mode; /* "txt2img", "img2img" or "inpaint" */
  const char* prompt;
  const char* negative;
  const char* sampler; /* ddpm, ddim, euler, euler_a, dpmpp_2m */
  const char* model;   /* checkpoint path; with workers, a name in their repositories */
  const char* tokenizer; /* "" : the shipped copy */
  const char* graph;     /* "" : the stock graph for the mode */
  const char* workers;   /* "" : in-process; else HOST:PORT,... or dns:///NAME:PORT */
  /* With workers, as sd-graph's flags: "" for each is unset. The token is the first line of
   * token_file, else $SD_WORKER_TOKEN. require_tls refuses plaintext connections. */
  const char* token_file;
  const char* tls_ca;
  const char* tls_cert;
  const char* tls_key;
  const char* tls_server_name;
  int require_tls;
  const char* weighting;  /* prompt weighting: a1111 (""), comfy or none */
  int clip_skip;          /* 1 (or 0): CLIP's last layer */
  const char* embeddings; /* "" : no textual-inversion folder */
  const char* vae;        /* "" : the checkpoint's own VAE */
  const char* lora;       /* "NAME[:UNET[:TEXT]],..." ("" : none) */
  int seed, steps, width, height;
  double cfg, strength;
  /* img2img / inpaint: the input image as 8-bit sRGB, and for inpaint the mask (8-bit gray, white =
   * repaint), both init_width x init_height. */
  const unsigned char* init_rgb;
  const unsigned char* mask;
  int init_width, init_height;
  /* img2img with a ControlNet: its file (with workers, a name in their repositories; "" : none),
   * its strength and the hint picture (8-bit sRGB, hint_width x hint_height, from the aux pad). */
  const char* controlnet;
  double control_strength;
  const unsigned char* hint_rgb;
  int hint_width, hint_height;
  const volatile int* cancel; /* polled: non-zero stops the run */
  SdGeglProgress progress;
  void* progress_user;
} SdGeglRequest;

/* Runs the request. On success returns 0 and sets *rgba (out_width x out_height x 4 floats, 0..1, sRGB
 * encoded: babl "R'G'B'A float"), to be freed with sd_gegl_free. On failure returns non-zero and sets
 * *error (freed with sd_gegl_free). Images of img2img / inpaint that are not multiples of 64 are resized to
 * the nearest multiples for the model and the result back to the input's size. */
#define SD_GEGL_EXPORT __attribute__((visibility("default")))
SD_GEGL_EXPORT int sd_gegl_run(const SdGeglRequest* request, float** rgba, int* out_width, int* out_height, char** error);
SD_GEGL_EXPORT void sd_gegl_free(void* p);
/* The side in pixels `model` was trained at (its "sdgraph.native_size" metadata), what width and
 * height 0 mean: of the demo model when `model` is empty or names it, else of a local checkpoint
 * file; 512 (SD v1.x) when the model declares none or only workers hold it. Never fails. */
SD_GEGL_EXPORT int sd_gegl_native_size(const char* model);

#ifdef __cplusplus
}
#endif

#endif
