/* Shared by the three operations (each defines its own GeglProperties with these field names). */
#ifndef SDGRAPH_GEGL_COMMON_H
#define SDGRAPH_GEGL_COMMON_H

#include <gegl-plugin.h>

#include "sd_gegl_bridge.h"

/* Per-operation state in GeglProperties.user_data: a cancel flag raised when a property changes (the host
 * re-renders with new settings, so the run in progress is moot) or the operation goes away. */
typedef struct {
  volatile int cancel;
} SdGeglState;

static void sd_gegl_on_notify(GObject* object, GParamSpec* pspec, gpointer data) {
  (void)object;
  (void)pspec;
  ((SdGeglState*)data)->cancel = 1;
}

static SdGeglState* sd_gegl_state(GeglOperation* operation, gpointer* user_data) {
  if (!*user_data) {
    *user_data = g_new0(SdGeglState, 1);
    g_signal_connect(operation, "notify", G_CALLBACK(sd_gegl_on_notify), *user_data);
  }
  return (SdGeglState*)*user_data;
}

static void sd_gegl_progress(void* user, double fraction, const char* message) {
  gegl_operation_progress((GeglOperation*)user, fraction, (gchar*)message);
}

/* Fills the fields every operation has. */
#define SD_GEGL_REQUEST(r, o, operation, the_mode)                                   \
  do {                                                                               \
    SdGeglState* state_ = sd_gegl_state(GEGL_OPERATION(operation), &(o)->user_data); \
    state_->cancel = 0;                                                              \
    (r).mode = (the_mode);                                                           \
    (r).prompt = (o)->prompt;                                                        \
    (r).negative = (o)->negative;                                                    \
    (r).sampler = (o)->sampler;                                                      \
    (r).model = (o)->model;                                                          \
    (r).tokenizer = (o)->tokenizer;                                                  \
    (r).graph = (o)->graph;                                                          \
    (r).workers = (o)->workers;                                                      \
    (r).token_file = (o)->token_file;                                                \
    (r).tls_ca = (o)->tls_ca;                                                        \
    (r).tls_cert = (o)->tls_cert;                                                    \
    (r).tls_key = (o)->tls_key;                                                      \
    (r).tls_server_name = (o)->tls_server_name;                                      \
    (r).require_tls = (o)->require_tls;                                              \
    (r).seed = (o)->seed;                                                            \
    (r).steps = (o)->steps;                                                          \
    (r).cfg = (o)->cfg;                                                              \
    (r).weighting = (o)->weighting;                                                  \
    (r).clip_skip = (o)->clip_skip;                                                  \
    (r).embeddings = (o)->embeddings;                                                \
    (r).vae = (o)->vae;                                                              \
    (r).lora = (o)->lora;                                                            \
    (r).cancel = &state_->cancel;                                                    \
    (r).progress = sd_gegl_progress;                                                 \
    (r).progress_user = (operation);                                                 \
  } while (0)

/* Runs `r` and writes the result into `output` at (x, y); on failure a GEGL warning names the operation. */
static gboolean sd_gegl_render(const char* op, const SdGeglRequest* r, GeglBuffer* output, gint x, gint y) {
  float* rgba = NULL;
  int w = 0, h = 0;
  char* error = NULL;
  if (sd_gegl_run(r, &rgba, &w, &h, &error) != 0) {
    g_warning("%s: %s", op, error ? error : "failed");
    sd_gegl_free(error);
    return FALSE;
  }
  GeglRectangle rect = {x, y, w, h};
  gegl_buffer_set(output, &rect, 0, babl_format("R'G'B'A float"), rgba, GEGL_AUTO_ROWSTRIDE);
  sd_gegl_free(rgba);
  return TRUE;
}

/* The whole input: the model needs all of it, and computes all of the output at once. */
static G_GNUC_UNUSED GeglRectangle sd_gegl_whole_input(GeglOperation* operation) {
  const GeglRectangle* in = gegl_operation_source_get_bounding_box(operation, "input");
  GeglRectangle none = {0, 0, 0, 0};
  return in ? *in : none;
}

static G_GNUC_UNUSED GeglRectangle sd_gegl_required_whole_input(GeglOperation* operation, const gchar* pad,
                                                               const GeglRectangle* roi) {
  (void)pad;
  (void)roi;
  return sd_gegl_whole_input(operation);
}

/* All of pad `pad` (the aux pad's own extent: a hint picture may be any size). */
static G_GNUC_UNUSED GeglRectangle sd_gegl_required_whole_pad(GeglOperation* operation,
                                                              const gchar* pad,
                                                              const GeglRectangle* roi) {
  (void)roi;
  const GeglRectangle* box = gegl_operation_source_get_bounding_box(operation, pad);
  GeglRectangle none = {0, 0, 0, 0};
  return box ? *box : none;
}

/* Reads the hint picture on pad "aux" (all of it, 8-bit sRGB) into `r` when one is connected;
 * returns the pixels for the caller to g_free (NULL when none). */
static G_GNUC_UNUSED guchar* sd_gegl_read_hint(GeglOperation* operation, GeglBuffer* aux,
                                               SdGeglRequest* r) {
  const GeglRectangle* box = aux ? gegl_operation_source_get_bounding_box(operation, "aux") : NULL;
  if (!box || box->width <= 0 || box->height <= 0) return NULL;
  guchar* hint = g_new(guchar, (gsize)box->width * box->height * 3);
  gegl_buffer_get(aux, box, 1.0, babl_format("R'G'B' u8"), hint, GEGL_AUTO_ROWSTRIDE,
                  GEGL_ABYSS_NONE);
  r->hint_rgb = hint;
  r->hint_width = box->width;
  r->hint_height = box->height;
  return hint;
}

static G_GNUC_UNUSED GeglRectangle sd_gegl_cached_whole_input(GeglOperation* operation, const GeglRectangle* roi) {
  (void)roi;
  return sd_gegl_whole_input(operation);
}

/* Frees the per-operation state with the operation (after gegl-op.h's own finalize). Expands, after
 * gegl-op.h, to `finalize` and SD_GEGL_HOOK_FINALIZE(klass) for class_init. */
#define SD_GEGL_DEFINE_FINALIZE                                \
  static void (*parent_finalize)(GObject*) = NULL;             \
  static void finalize(GObject* object) {                      \
    GeglProperties* o = GEGL_PROPERTIES(object);               \
    g_clear_pointer(&o->user_data, g_free);                    \
    parent_finalize(object);                                   \
  }
#define SD_GEGL_HOOK_FINALIZE(klass)                           \
  do {                                                         \
    parent_finalize = G_OBJECT_CLASS(klass)->finalize;         \
    G_OBJECT_CLASS(klass)->finalize = finalize;                \
  } while (0)

// One property and its details a line each, as GEGL's chant files write them.
// clang-format off
#define SD_GEGL_COMMON_PROPERTIES                                                                    \
  property_string(prompt, "Prompt", "")                                                             \
    description("What to draw")                                                                     \
  property_string(negative, "Negative prompt", "")                                                  \
    description("What to steer away from")                                                          \
  property_int(seed, "Seed", 0)                                                                     \
    value_range(0, G_MAXINT)                                                                        \
  property_int(steps, "Steps", 30)                                                                  \
    value_range(1, 1000)                                                                            \
  property_double(cfg, "Guidance scale", 7.5)                                                       \
    value_range(0.0, 50.0)                                                                          \
  property_string(sampler, "Sampler", "ddpm")                                                       \
    description("ddpm, ddim, euler, euler_a or dpmpp_2m")                                           \
  property_file_path(model, "Model", "")                                                            \
    description("SD v1.x checkpoint (.safetensors or .ckpt); with workers, a model name; empty: the demo model (in sd:inpaint its inpainting variant)") \
  property_file_path(tokenizer, "Tokenizer", "")                                                    \
    description("Folder with vocab.json and merges.txt (empty: the shipped copy)")                  \
  property_file_path(graph, "Graph file", "")                                                       \
    description("A graph .pbtxt to run instead of the stock one; in sd:txt2img also a ComfyUI workflow (.json, or the .png ComfyUI saved), whose settings stand but for prompt, negative, seed and size")                                   \
  property_string(workers, "Workers", "")                                                           \
    description("HOST:PORT,... or dns:///NAME:PORT of sd-worker processes (empty: in-process)")     \
  property_file_path(token_file, "Token file", "")                                                  \
    description("Bearer token for the workers: the file's first line (empty: $SD_WORKER_TOKEN)")    \
  property_file_path(tls_ca, "TLS CA", "")                                                          \
    description("Use TLS to the workers, trusting this CA (PEM)")                                   \
  property_file_path(tls_cert, "TLS client certificate", "")                                        \
    description("Client certificate for mutual TLS (PEM; with the key)")                           \
  property_file_path(tls_key, "TLS client key", "")                                                 \
    description("Key of the client certificate (PEM)")                                              \
  property_string(tls_server_name, "TLS server name", "")                                           \
    description("The name in the workers' certificates, when it is not the host name")             \
  property_boolean(require_tls, "Require TLS", FALSE)                                               \
    description("Refuse to talk to workers (or send a token) without TLS")                          \
  property_string(weighting, "Prompt weighting", "a1111")                                           \
    description("a1111: (word) x1.1, [word] /1.1, (word:1.3) multiplies; comfy: (word:1.3) "        \
                "replaces, [ ] are text; none")                                                     \
  property_int(clip_skip, "CLIP skip", 1)                                                           \
    description("1: CLIP's last layer; 2: the layer before it, as other SD tools")                  \
    value_range(1, 12)                                                                              \
  property_file_path(embeddings, "Embeddings folder", "")                                           \
    description("Textual-inversion embeddings: a prompt word equal to a file's name uses it")       \
  property_file_path(vae, "VAE", "")                                                                \
    description("A standalone VAE instead of the checkpoint's (with workers, a name)")              \
  property_string(lora, "LoRA", "")                                                                 \
    description("NAME[:UNET[:TEXT]], comma-separated: LoRA files (or names in the model's folder) " \
                "with strengths; <lora:NAME:W> in the prompt does the same")

/* sd:txt2img and sd:img2img: a ControlNet steered by the picture on the aux pad. */
#define SD_GEGL_CONTROL_PROPERTIES                                                                   \
  property_file_path(controlnet, "ControlNet", "")                                                  \
    description("An SD v1.x ControlNet; its hint is the picture on the aux pad (with workers: a "   \
                "name in their repositories)")                                                      \
  property_double(control_strength, "ControlNet strength", 1.0)                                     \
    description("Scale of the ControlNet's residuals")                                              \
    value_range(0.0, 2.0)
// clang-format on

#endif
