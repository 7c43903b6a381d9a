/* sd:txt2img — a GEGL source operation: Stable Diffusion text to image through sdgraph's stock graph (or
 * `graph`), in-process or on sd-worker processes. */
#include "sd_gegl_common.h"

#ifdef GEGL_PROPERTIES

SD_GEGL_COMMON_PROPERTIES
property_int(width, "Width", 0)
  description("Pixels, a multiple of 64; 0: the model's native size (512 for SD v1.x, 64 for the demo model)")
  value_range(0, 8192)
property_int(height, "Height", 0)
  description("Pixels, a multiple of 64; 0: the model's native size (512 for SD v1.x, 64 for the demo model)")
  value_range(0, 8192)

#else

#define GEGL_OP_SOURCE
#define GEGL_OP_NAME sd_txt2img
#define GEGL_OP_C_SOURCE sd-txt2img.c
#define GEGL_OP_BUNDLE
#include "gegl-op.h"

SD_GEGL_DEFINE_FINALIZE

static void prepare(GeglOperation* operation) {
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

static gboolean process(GeglOperation* operation, GeglBuffer* output, const GeglRectangle* result, gint level) {
  (void)result;
  (void)level;
  GeglProperties* o = GEGL_PROPERTIES(operation);
  SdGeglRequest r = {0};
  SD_GEGL_REQUEST(r, o, operation, "txt2img");
  const GeglRectangle box = get_bounding_box(operation);
  r.width = box.width;
  r.height = box.height;
  return sd_gegl_render("sd:txt2img", &r, output, 0, 0);
}

static void gegl_op_class_init(GeglOpClass* klass) {
  GeglOperationClass* operation_class = GEGL_OPERATION_CLASS(klass);
  GeglOperationSourceClass* source_class = GEGL_OPERATION_SOURCE_CLASS(klass);
  SD_GEGL_HOOK_FINALIZE(klass);
  source_class->process = process;
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
