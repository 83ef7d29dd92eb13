//! Programs of the GUP hooks: references and pins taken and released.

use super::super::*;

// --------------------------------------------------------------------- GUP --

// 6.1: try_grab_page(struct page *page, unsigned int flags) -> bool
const TRY_GRAB_PAGE: GrabSpec = GrabSpec {
    hook: HookId::TryGrabPage,
    refs: None,
    flags: 1,
    ret: GrabRet::Bool,
};
grab_hook!(
    TRY_GRAB_PAGE,
    2,
    try_grab_page_fentry,
    try_grab_page_fexit,
    try_grab_page_kprobe,
    try_grab_page_kretprobe
);

// 6.1: try_grab_folio(struct page *page, int refs, unsigned int flags) -> struct folio *
// 6.2+: try_grab_folio(struct folio *folio, int refs, unsigned int flags) -> int
const TRY_GRAB_FOLIO: GrabSpec = GrabSpec {
    hook: HookId::TryGrabFolio,
    refs: Some(1),
    flags: 2,
    ret: GrabRet::PtrOrInt,
};
grab_hook!(
    TRY_GRAB_FOLIO,
    3,
    try_grab_folio_fentry,
    try_grab_folio_fexit,
    try_grab_folio_kprobe,
    try_grab_folio_kretprobe
);

// 6.12+: try_grab_folio_fast(struct page *page, int refs, unsigned int flags) -> struct folio *
const TRY_GRAB_FOLIO_FAST: GrabSpec = GrabSpec {
    hook: HookId::TryGrabFolioFast,
    refs: Some(1),
    flags: 2,
    ret: GrabRet::Ptr,
};
grab_hook!(
    TRY_GRAB_FOLIO_FAST,
    3,
    try_grab_folio_fast_fentry,
    try_grab_folio_fast_fexit,
    try_grab_folio_fast_kprobe,
    try_grab_folio_fast_kretprobe
);

// gup_put_folio(struct folio *folio, int refs, unsigned int flags) -> void
const GUP_PUT_FOLIO: PutSpec = PutSpec {
    hook: HookId::GupPutFolio,
    kind: EventKind::GupPut,
    refs: Refs::Arg(1),
    flags: PutFlags::Arg(2),
    // 6.x unpin_user_page tail-calls gup_put_folio.
    nested_in: &[HookId::UnpinUserPage],
};
put_hook!(
    GUP_PUT_FOLIO,
    3,
    gup_put_folio_fentry,
    gup_put_folio_fexit,
    gup_put_folio_kprobe,
    gup_put_folio_kretprobe
);

// unpin_user_page(struct page *page) -> void: one FOLL_PIN reference. 7.x
// inlines gup_put_folio into it, so gup_put_folio alone misses these.
const UNPIN_USER_PAGE: PutSpec = PutSpec {
    hook: HookId::UnpinUserPage,
    kind: EventKind::GupPut,
    refs: Refs::One,
    flags: PutFlags::FollPin,
    nested_in: &[],
};
put_hook!(
    UNPIN_USER_PAGE,
    1,
    unpin_user_page_fentry,
    unpin_user_page_fexit,
    unpin_user_page_kprobe,
    unpin_user_page_kretprobe
);

// 6.1: __put_devmap_managed_page_refs(struct page *page, int refs) -> bool
const PUT_DEVMAP_PAGE: PutSpec = PutSpec {
    hook: HookId::PutDevmapManagedPageRefs,
    kind: EventKind::RefPut,
    refs: Refs::Arg(1),
    flags: PutFlags::None,
    nested_in: &[HookId::GupPutFolio, HookId::UnpinUserPage],
};
put_hook!(
    PUT_DEVMAP_PAGE,
    2,
    put_devmap_managed_page_refs_fentry,
    put_devmap_managed_page_refs_fexit,
    put_devmap_managed_page_refs_kprobe,
    put_devmap_managed_page_refs_kretprobe
);

// 6.12: __put_devmap_managed_folio_refs(struct folio *folio, int refs) -> bool
const PUT_DEVMAP_FOLIO: PutSpec = PutSpec {
    hook: HookId::PutDevmapManagedFolioRefs,
    ..PUT_DEVMAP_PAGE
};
put_hook!(
    PUT_DEVMAP_FOLIO,
    2,
    put_devmap_managed_folio_refs_fentry,
    put_devmap_managed_folio_refs_fexit,
    put_devmap_managed_folio_refs_kprobe,
    put_devmap_managed_folio_refs_kretprobe
);
