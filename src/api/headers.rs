//! Request headers read whole: a header that carries data (metadata) is
//! refused when it is sent twice or is not visible ASCII, never dropped
//! (poem's `Header` would take the first valid value, or none).

use poem::Request;

use crate::error::Error;

/// The one value of header `name`, if sent; 400 with `refusal` when it is
/// sent more than once or holds a byte that is not visible ASCII.
pub fn sent_once<'a>(
    request: &'a Request,
    name: &str,
    refusal: &str,
) -> Result<Option<&'a str>, Error> {
    let mut sent = request.headers().get_all(name).iter();
    let first = sent.next();
    if sent.next().is_some() {
        return Err(Error::BadRequest(refusal.into()));
    }
    first
        .map(|value| {
            value
                .to_str()
                .map_err(|_| Error::BadRequest(refusal.into()))
        })
        .transpose()
}
