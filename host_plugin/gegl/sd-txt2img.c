/* sd:txt2img — a GEGL source operation: Stable Diffusion text to image through sdgraph's stock
 * graph (or `graph`), in-process or on sd-worker processes. With `controlnet` set, the picture on
 * its aux pad (a depth pass, edges, ...) steers the image: a source with one optional input pad. */
#include "sd_gegl_common.h"

#ifdef GEGL_PROPERTIES

// clang-format off
SD_GEGL_COMMON_PROPERTIES
SD_GEGL_CONTROL_PROPERTIES
property_int(width, "Width", 0)
  description("Pixels, a multiple of 64; 0: the model's native size (512 for SD v1.x, 64 for the demo model)")
  value_range(0, 8192)
property_int(height, "Height", 0)
  description("Pixels, a multiple of 64; 0: the model's native size (512 for SD v1.x, 64 for the demo model)")
  value_range(0, 8192)
// clang-format on

#else

#define GEGL_OP_SOURCE
#define GEGL_OP_NAME sd_txt2img
#define GEGL_OP_C_SOURCE sd-txt2img.c
#define GEGL_OP_BUNDLE
#include "gegl-op.h"

SD_GEGL_DEFINE_FINALIZE

static void prepare(GeglOperation* operation) {
  gegl_operation_set_format(operation, "aux", babl_format("R'G'B' u8"));
  gegl_operation_set_format(operation, "output", babl_format("R'G'B'A float"));
}

static GeglRectangle get_bounding_box(GeglOperation* operation) {
  GeglProperties* o = GEGL_PROPERTIES(operation);
  const int native = o->width == 0 || o->height == 0 ? sd_gegl_native_size(o->model) : 0;
  GeglRectangle r = {0, 0, o->width ? o->width : native, o->height ? o->height : native};
  return r;
}

/* The model makes the whole image at once: have GEGL ask for all of it, once. */
static GeglRectangle get_cached_region(GeglOperation* operation, const GeglRectangle* roi) {
  (void)roi;
  return get_bounding_box(operation);
}

/* The aux pad: GEGL's source operations have none, so one is added as composers add theirs. */
static void (*parent_attach)(GeglOperation*) = NULL;
static void attach(GeglOperation* operation) {
  parent_attach(operation);
  GParamSpec* pspec =
      g_param_spec_object("aux", "Aux", "A hint picture for the ControlNet", GEGL_TYPE_BUFFER,
                          (GParamFlags)(G_PARAM_READWRITE | GEGL_PARAM_PAD_INPUT));
  gegl_operation_create_pad(operation, pspec);
  g_param_spec_sink(pspec);
}

/* The hint is used whole, and any change to it changes the whole image. */
static GeglRectangle required(GeglOperation* operation, const gchar* pad,
                              const GeglRectangle* roi) {
  return sd_gegl_required_whole_pad(operation, pad, roi);
}

static GeglRectangle invalidated(GeglOperation* operation, const gchar* pad,
                                 const GeglRectangle* roi) {
  (void)pad;
  (void)roi;
  return get_bounding_box(operation);
}

/* GeglOperationSource's own process knows only the output pad: this one also reads the aux pad. */
static gboolean process(GeglOperation* operation, GeglOperationContext* context,
                        const gchar* output_pad, const GeglRectangle* result, gint level) {
  (void)result;
  (void)level;
  if (g_strcmp0(output_pad, "output") != 0) return FALSE;
  GeglProperties* o = GEGL_PROPERTIES(operation);
  SdGeglRequest r = {0};
  SD_GEGL_REQUEST(r, o, operation, "txt2img");
  const GeglRectangle box = get_bounding_box(operation);
  r.width = box.width;
  r.height = box.height;
  r.controlnet = o->controlnet;
  r.control_strength = o->control_strength;
  GeglBuffer* aux = (GeglBuffer*)gegl_operation_context_dup_object(context, "aux");
  guchar* hint = sd_gegl_read_hint(operation, aux, &r);
  g_clear_object(&aux);
  GeglBuffer* output = gegl_operation_context_get_target(context, "output");
  const gboolean ok = sd_gegl_render("sd:txt2img", &r, output, 0, 0);
  g_free(hint);
  return ok;
}

static void gegl_op_class_init(GeglOpClass* klass) {
  GeglOperationClass* operation_class = GEGL_OPERATION_CLASS(klass);
  SD_GEGL_HOOK_FINALIZE(klass);
  parent_attach = operation_class->attach;
  operation_class->attach = attach;
  operation_class->process = process;
  operation_class->get_required_for_output = required;
  operation_class->get_invalidated_by_change = invalidated;
  operation_class->prepare = prepare;
  operation_class->get_bounding_box = get_bounding_box;
  operation_class->get_cached_region = get_cached_region;
  operation_class->threaded = FALSE;
  gegl_operation_class_set_keys(operation_class, "name", "sd:txt2img", "title", "Stable Diffusion: text to image",
                                "categories", "render", "description",
                                "Renders an image from a text prompt with a Stable Diffusion v1.x checkpoint (sdgraph)",
                                NULL);
}

#endif
